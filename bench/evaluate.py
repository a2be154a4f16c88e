"""`llava-o1 eval`: score search strategies on LLaVA-o1-100k-format records with known answers.

Each question goes through the search, in this process on an engine (`--model`, default the
demo model) or against a running server (`--url`). The answer is read from the CONCLUSION (the
option letter for multiple choice) and compared with the record's `answer` (or, without one, with
the conclusion of its own staged answer). Reported: accuracy, the share of answers with a valid
four-stage structure (every stage non-empty, and every stage closed by the model's own closing tag
rather than cut at the token limit), and tokens per question, as a Markdown table and JSON.

Table mode (`--strategies none,majority,best_of_n,sentence,stage --beam-widths 2,4,8`) scores
every strategy at every width on one engine and adds, read from each search's trace, the oracle
(pass@N: any candidate of the final answer right) and the judge's pairwise accuracy per stage in
the matches it played between a right and a wrong candidate; `--plot-out` draws accuracy against N.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from bench.benchmark_eval import is_benchmark_file, run_benchmarks
from bench.eval_report import markdown, plot, summarize
from bench.trace_scores import judge_outcomes, oracle_right, scored_labels
from training.labels import StageLabeler, is_correct
from training.records import image_data_url, question_messages, read_questions

# swires samples by its own counts; any beam width above 1 runs it (1 would be a single sample).
SWIRES_WIDTH = 4


def valid_structure(trace: dict) -> bool:
    """All stages non-empty, and each closed by the model (not cut at a token limit)."""
    if trace.get("finish_reason") != "stop" or any(not s["text"].strip() for s in trace["stages"]):
        return False
    for stage in trace["stages"]:
        if len(stage.get("steps", [])) == 1 and stage.get("winner") is not None and stage["candidates"]:
            winner = next((c for c in stage["candidates"] if c["index"] == stage["winner"]), None)
            if winner is None or winner["finish_reason"] != "stop":
                return False
    for step in trace.get("answer_steps", []):
        winner = step.get("winner")
        if winner is not None and step["candidates"][winner]["finish_reason"] != "stop":
            return False
    return True


async def _score_in_process(args, records: list[dict], cells: list[tuple[str, int]], score=None) -> list[list[dict]]:
    from models.engine_factory import start_engine
    from server.default_model import use_default_model
    from server.search_flags import swires_cutoff_of
    from stage_search.config import SearchConfig, SwiresSettings
    from stage_search.search import run_search

    use_default_model(args)
    engine = start_engine(args)
    base = SearchConfig(
        max_tokens_per_stage=args.max_tokens_per_stage,
        temperature=args.temperature,
        search_temperature=args.search_temperature,
        seed=args.search_seed,
        stage_prompt=args.stage_prompt,
        judge=args.judge,
        debias=args.debias,
        verifier_form=args.verifier_form,
        swires=SwiresSettings(cutoff=swires_cutoff_of(args)),
    )
    limit = asyncio.Semaphore(args.concurrency)
    # By position: ids repeat across files (every synth-data set starts at shapes-000000).
    messages = [question_messages(r) for r in records]

    async def one(index: int, config: SearchConfig) -> dict:
        record = records[index]
        async with limit:
            result = await run_search(engine, messages[index], config)
        return (score or _score)(record, result.answer, result.to_dict())

    try:
        results = []
        for strategy, width in cells:
            config = base.with_(strategy=strategy, beam_width=width)
            results.append(await asyncio.gather(*(one(i, config) for i in range(len(records)))))
            _progress(strategy, width, results[-1])
        return results
    finally:
        await engine.shutdown()


async def _score_over_http(args, records: list[dict], cells: list[tuple[str, int]], score=None) -> list[list[dict]]:
    import httpx

    from server.bearer import auth_headers

    base = args.url.rstrip("/").removesuffix("/v1")
    limit = asyncio.Semaphore(args.concurrency)
    async with httpx.AsyncClient(base_url=base, headers=auth_headers(args.api_key), timeout=600) as client:
        model = (await client.get("/v1/models")).json()["data"][0]["id"]

        async def one(record: dict, strategy: str, width: int) -> dict:
            content = []
            if record["_image_path"]:
                content.append({"type": "image_url", "image_url": {"url": image_data_url(record["_image_path"])}})
            content.append({"type": "text", "text": record["_question"]})
            body = {
                "model": model,
                "messages": [{"role": "user", "content": content}],
                "temperature": args.temperature,
                "reasoning": {
                    "strategy": strategy,
                    "beam_width": width,
                    "trace": True,
                    "max_tokens_per_stage": args.max_tokens_per_stage,
                    "stage_prompt": args.stage_prompt,
                    "judge": args.judge,
                    "debias": args.debias,
                    "verifier_form": args.verifier_form,
                },
            }
            if args.search_seed is not None:
                body["seed"] = args.search_seed
            async with limit:
                response = await client.post("/v1/chat/completions", json=body)
            response.raise_for_status()
            trace = response.json()["reasoning"]["trace"]
            return (score or _score)(record, trace["answer"], trace)

        results = []
        for strategy, width in cells:
            results.append(await asyncio.gather(*(one(r, strategy, width) for r in records)))
            _progress(strategy, width, results[-1])
        return results


def _progress(strategy: str, width: int, scored: list[dict]) -> None:
    if scored and "correct" not in scored[0]:  # benchmark files: scored afterwards
        print(f"{strategy} @{width}: {len(scored)} answered", file=sys.stderr, flush=True)
        return
    accuracy = sum(s["correct"] for s in scored) / len(scored) if scored else 0.0
    print(f"{strategy} @{width}: {accuracy:.1%} of {len(scored)}", file=sys.stderr, flush=True)


def _score(record: dict, conclusion: str, trace: dict) -> dict:
    labeler = StageLabeler(record)
    return {
        "id": record["id"],
        "kind": record.get("kind", "all"),
        "data": record.get("_data", ""),
        "correct": is_correct(record, conclusion),
        "valid": valid_structure(trace),
        "conclusion": conclusion.strip(),
        "completion_tokens": trace["usage"]["completion_tokens"],
        "judge_tokens": trace["usage"]["judge_tokens"],
        "judge_calls": trace["usage"].get("judge_calls", 0),
        "verifier": f"{trace.get('verifier', 'self')} ({trace.get('verifier_form', 'pairwise')})",
        "retraces": trace.get("retraces", 0),
        "oracle": oracle_right(labeler, trace),
        "judge_outcomes": judge_outcomes(labeler, trace),
        "scored": scored_labels(labeler, trace),
    }


def build_parser() -> argparse.ArgumentParser:
    from models.engine_config import add_engine_arguments, make_parser
    from stage_search.config import JUDGE_MODES, STAGE_PROMPTS, STRATEGY_NAMES, VERIFIER_FORMS, SearchConfig

    parser = make_parser(
        "llava-o1 eval",
        "Score search strategies on records with known answers (accuracy, oracle, judge accuracy, tokens).",
        verbose_flag=True,
    )
    group = parser.add_argument_group("evaluation")
    group.add_argument(
        "--data",
        required=True,
        nargs="+",
        help="one or more .jsonl files of records (e.g. synth-data's test.jsonl), pooled; accuracy is "
        "also reported per file. Or benchmark files as VLMEvalKit distributes them (.tsv: MMStar, MMBench, "
        "AI2D, HallusionBench, MMVet, MathVista), scored overall, per file and per category",
    )
    group.add_argument("--strategy", default="none", choices=STRATEGY_NAMES)
    group.add_argument("--beam-width", type=int, default=1)
    group.add_argument(
        "--strategies",
        help="table mode: comma-separated strategies, each at every --beam-widths (none only at 1)",
    )
    group.add_argument("--beam-widths", default="2,4,8", help="table mode: comma-separated beam widths")
    group.add_argument("--max-tokens-per-stage", type=int, default=96)
    group.add_argument(
        "--temperature",
        type=float,
        help="default: the server's rule (the search temperature when the search branches, greedy otherwise)",
    )
    group.add_argument("--search-temperature", type=float, default=SearchConfig().search_temperature)
    group.add_argument("--search-seed", type=int, help="seed for reproducible candidates (as in ask)")
    group.add_argument("--judge", choices=JUDGE_MODES, default="logprob")
    group.add_argument("--debias", action="store_true", help="judge each pair in both orders")
    group.add_argument(
        "--verifier-form",
        choices=VERIFIER_FORMS,
        default="auto",
        help="pairwise matches or pointwise scores (auto: pointwise for a separate verifier, as serve)",
    )
    group.add_argument(
        "--stage-prompt",
        choices=STAGE_PROMPTS,
        default="auto",
        help="ask for the four stages in the prompt: auto does for models whose name does not say "
        "they were trained on them (a trained model given by path wants never)",
    )
    group.add_argument(
        "--swires-cutoff",
        type=float,
        help="swires's cutoff (default: the verifier's calibrated one, as serve; docs/search.md)",
    )
    group.add_argument("--concurrency", type=int, default=16, help="questions in flight at once")
    group.add_argument("--limit", type=int, help="only the first N questions of each file")
    group.add_argument("--url", help="score a running server instead of starting an engine here")
    group.add_argument("--api-key", default=os.environ.get("LLAVA_O1_API_KEY"))
    group.add_argument("--json-out", help="also write the summaries and per-question results here")
    group.add_argument(
        "--judge-url",
        help="benchmark files: an OpenAI-compatible API (ending in /v1) that scores open answers (MMVet) and "
        "reads answers no rule can (MathVista), as those benchmarks' scorers use GPT",
    )
    # Not --judge-model: that names the search's own judge engine (--judge-engine-url).
    group.add_argument(
        "--judge-url-model", help="the --judge-url judge's model name (default: the first model it lists)"
    )
    group.add_argument("--judge-url-api-key", help="the --judge-url judge's key (default: $OPENAI_API_KEY)")
    group.add_argument("--plot-out", help="table mode: draw accuracy against beam width to this PNG")
    add_engine_arguments(parser)
    return parser


def cells_of(args: argparse.Namespace, strategy_names: Sequence[str]) -> list[tuple[str, int]]:
    """The (strategy, beam width) pairs to score: one, or the table mode's grid. Greedy runs once at
    width 1, swires once at any width above 1 (its own counts say how many it samples)."""
    if not args.strategies:
        return [(args.strategy, args.beam_width)]
    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    unknown = [s for s in strategies if s not in strategy_names]
    if unknown:
        raise SystemExit(f"llava-o1 eval: unknown strategies {unknown}; choose from {', '.join(strategy_names)}")
    widths = sorted({int(w) for w in args.beam_widths.split(",") if w.strip()})
    if not widths or min(widths) < 1:
        raise SystemExit("llava-o1 eval: --beam-widths needs positive integers")
    one_width = {"none": 1, "swires": SWIRES_WIDTH}
    return [
        (s, one_width[s]) if s in one_width else (s, w)
        for s in strategies
        for w in widths
        if s not in one_width or w == widths[0]
    ]


def main(argv: Sequence[str]) -> int:
    from models.engine_config import parse_engine_command
    from stage_search.config import STRATEGY_NAMES

    args = parse_engine_command(build_parser, argv)
    if any(is_benchmark_file(path) for path in args.data):
        return run_benchmarks(args)
    cells = cells_of(args, STRATEGY_NAMES)
    records = [{**record, "_data": path} for path in args.data for record in read_questions(path)[: args.limit]]
    run = _score_over_http if args.url else _score_in_process
    scored = asyncio.run(run(args, records, cells))
    summaries = [summarize(s, strategy, width) for s, (strategy, width) in zip(scored, cells, strict=True)]
    if args.json_out:  # first: the file is written even if stdout goes away
        if len(cells) == 1:
            body = {"summary": summaries[0], "questions": scored[0]}
        else:
            questions = {f"{strategy}@{width}": s for s, (strategy, width) in zip(scored, cells, strict=True)}
            body = {"summaries": summaries, "questions": questions}
        Path(args.json_out).write_text(json.dumps(body, indent=2) + "\n")
    if args.plot_out:
        plot(summaries, args.plot_out)
    print(markdown(summaries))
    print(json.dumps(summaries[0] if len(cells) == 1 else summaries, indent=2))
    print(f"scored {len(records)} questions from {', '.join(args.data)} in {len(cells)} settings", file=sys.stderr)
    return 0
