"""Command-line flags for the search settings, shared by `serve` (defaults) and `ask`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from stage_search.config import JUDGE_MODES, STAGE_PROMPTS, STRATEGY_NAMES, VERIFIER_FORMS, SearchConfig, SwiresSettings
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
        "--verifier-form",
        choices=VERIFIER_FORMS,
        default=defaults.verifier_form,
        help="how the verifier ranks candidates: pairwise matches, or a score each (pointwise); auto: pointwise "
        "for a separate verifier model (--judge-model-path, --judge-engine-url), pairwise when the model judges "
        "itself. swires always scores pointwise",
    )
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
    swires = SwiresSettings()
    group.add_argument("--swires-captions", type=int, default=swires.captions, help="swires: captions per attempt")
    group.add_argument(
        "--swires-kept-captions", type=int, default=swires.kept_captions, help="swires: captions kept per attempt"
    )
    group.add_argument(
        "--swires-reasonings", type=int, default=swires.reasonings_per_caption, help="swires: reasonings per caption"
    )
    group.add_argument(
        "--swires-conclusions", type=int, default=swires.conclusions, help="swires: reasoning paths given a conclusion"
    )
    group.add_argument(
        "--swires-max-retraces", type=int, default=swires.max_retraces, help="swires: attempts after the first"
    )
    group.add_argument(
        "--swires-cutoff",
        type=float,
        default=None,
        help="swires: retrace while the second-best reasoning scores at or below this (the verifier's log-odds; "
        "default: the cutoff its recipe calibrated, `swires_cutoff` in the --judge-model-path folder's "
        f"training.json, else {swires.cutoff})",
    )


def search_config_from(args: argparse.Namespace) -> SearchConfig:
    return SearchConfig(
        strategy=args.strategy,
        beam_width=args.beam_width,
        judge=args.judge,
        debias=args.debias,
        verifier_form=args.verifier_form,
        swires=SwiresSettings(
            captions=args.swires_captions,
            kept_captions=args.swires_kept_captions,
            reasonings_per_caption=args.swires_reasonings,
            conclusions=args.swires_conclusions,
            max_retraces=args.swires_max_retraces,
            cutoff=swires_cutoff_of(args),
        ),
        stage_prompt=args.stage_prompt,
        stages=StageSet.from_names([t.strip() for t in args.stage_tags.split(",")]),
        max_tokens_per_stage=args.max_tokens_per_stage,
        temperature=args.temperature,
        search_temperature=args.search_temperature,
        top_p=args.top_p,
        seed=args.search_seed,
    )


def swires_cutoff_of(args: argparse.Namespace) -> float:
    """--swires-cutoff, else the cutoff calibrated for the verifier in --judge-model-path (its recipe
    writes the paper's rule on its own scores into its training.json: the demo verifier's), else the
    default. A verifier on its own server (--judge-engine-url) has no folder here to read."""
    if getattr(args, "swires_cutoff", None) is not None:
        return args.swires_cutoff
    folder = getattr(args, "judge_model_path", None)
    record = Path(folder) / "training.json" if folder else None
    if record is not None and record.is_file():
        return float(json.loads(record.read_text()).get("swires_cutoff", SwiresSettings().cutoff))
    return SwiresSettings().cutoff
