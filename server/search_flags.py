"""Command-line flags for the search settings, shared by `serve` (defaults) and `ask`."""

from __future__ import annotations

import argparse

from stage_search.config import JUDGE_MODES, STAGE_PROMPTS, STRATEGY_NAMES, SearchConfig
from stage_search.stages import DEFAULT_STAGE_NAMES, StageSet


def add_search_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = SearchConfig()
    group = parser.add_argument_group("search")
    group.add_argument("--strategy", choices=STRATEGY_NAMES, default=defaults.strategy)
    group.add_argument(
        "--beam-width", type=int, default=defaults.beam_width, help="candidates per step (1 = a single sample)"
    )
    group.add_argument("--judge", choices=JUDGE_MODES, default=defaults.judge)
    group.add_argument("--debias", action="store_true", help="judge each pair in both orders")
    group.add_argument(
        "--stage-prompt",
        choices=STAGE_PROMPTS,
        default=defaults.stage_prompt,
        help="add the four-stage instruction (auto: unless the model is stage-trained)",
    )
    group.add_argument(
        "--stage-tags", default=",".join(DEFAULT_STAGE_NAMES), help="the four stage tag names, comma-separated"
    )
    group.add_argument("--max-tokens-per-stage", type=int, default=defaults.max_tokens_per_stage)
    group.add_argument(
        "--temperature",
        type=float,
        default=None,
        help="default for requests that give none (default: --search-temperature when the search branches, "
        "greedy for a single sample)",
    )
    group.add_argument(
        "--search-temperature",
        type=float,
        default=defaults.search_temperature,
        help=f"temperature of the candidates when the search branches and no temperature is given "
        f"(default {defaults.search_temperature})",
    )
    group.add_argument("--top-p", type=float, default=defaults.top_p)
    group.add_argument("--search-seed", type=int, default=None, help="seed for reproducible candidates")


def search_config_from(args: argparse.Namespace) -> SearchConfig:
    return SearchConfig(
        strategy=args.strategy,
        beam_width=args.beam_width,
        judge=args.judge,
        debias=args.debias,
        stage_prompt=args.stage_prompt,
        stages=StageSet.from_names([t.strip() for t in args.stage_tags.split(",")]),
        max_tokens_per_stage=args.max_tokens_per_stage,
        temperature=args.temperature,
        search_temperature=args.search_temperature,
        top_p=args.top_p,
        seed=args.search_seed,
    )
