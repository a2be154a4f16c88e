"""`llava-o1 eval --data FILE.tsv`: accuracy on the public benchmarks' files (bench/benchmark_files.py),
overall, per file and per category.

The model answers each question through the search (`--strategy`, `--beam-width`), in process or
against `--url`, exactly as `eval` runs on records; a result file that has a `prediction` column
already is scored as it stands. Each answer is read by the benchmark's rule (option letter, yes/no,
number); what no rule reads goes to the judge (`--judge-url`, `--judge-url-model`): scored 0 to 1 for
open answers, reduced to a bare answer for the rest. Without a judge those answers score 0 and are
counted as unjudged.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import tempfile
from collections import defaultdict
from collections.abc import AsyncIterator
from pathlib import Path

from bench.benchmark_files import Row, read_benchmark
from bench.open_answer_judge import OpenAnswerJudge

BENCHMARK_SUFFIX = ".tsv"


def is_benchmark_file(path: str) -> bool:
    return path.lower().endswith(BENCHMARK_SUFFIX)


async def _predictions(args, records: list[dict]) -> list[dict]:
    """The model's answer to every record (its conclusion), through eval's own runners."""
    from bench.evaluate import _score_in_process, _score_over_http, valid_structure

    def keep(record: dict, conclusion: str, trace: dict) -> dict:
        return {
            "prediction": conclusion.strip(),
            "valid": valid_structure(trace),
            "completion_tokens": trace["usage"]["completion_tokens"],
            "judge_tokens": trace["usage"]["judge_tokens"],
        }

    run = _score_over_http if args.url else _score_in_process
    return (await run(args, records, [(args.strategy, args.beam_width)], keep))[0]


async def _score(rows: list[Row], predictions: list[str], judge, concurrency: int) -> list[dict]:
    limit = asyncio.Semaphore(concurrency)

    async def one(row: Row, prediction: str) -> dict:
        score, how = row.rule_score(prediction), "rule"
        if score is None and judge is None:
            score, how = 0.0, "unjudged"
        elif score is None:
            async with limit:
                if row.kind == "open":
                    score, how = await judge.score(row.question, row.answer, prediction), "judge"
                else:
                    extracted = await judge.extract(row.prompt, prediction)
                    score, how = (row.rule_score(extracted) or 0.0), "judge extraction"
        return {"index": row.index, "kind": row.kind, "categories": list(row.categories), "answer": row.answer,
                "prediction": prediction, "score": score, "scored_by": how}  # fmt: skip

    return list(await asyncio.gather(*(one(r, p) for r, p in zip(rows, predictions, strict=True))))


def summarize_benchmark(scored: list[dict]) -> dict:
    def accuracy(items: list[dict]) -> float:
        return sum(s["score"] for s in items) / len(items) if items else 0.0

    by_file: dict[str, list[dict]] = defaultdict(list)
    by_category: dict[str, list[dict]] = defaultdict(list)
    for s in scored:
        by_file[s["data"]].append(s)
        for category in s["categories"]:  # MMVet's rows count under each capability they test
            by_category[category].append(s)
    how: dict[str, int] = defaultdict(int)
    for s in scored:
        how[s["scored_by"]] += 1
    summary = {
        "questions": len(scored),
        "accuracy": accuracy(scored),
        "scored_by": dict(how),
        "by_data": {k: {"questions": len(v), "accuracy": accuracy(v)} for k, v in by_file.items()},
        "by_category": {k: {"questions": len(v), "accuracy": accuracy(v)} for k, v in sorted(by_category.items())},
    }
    ran = [s for s in scored if "valid" in s]
    if ran:
        summary["valid_structure"] = sum(s["valid"] for s in ran) / len(ran)
        summary["tokens_per_question"] = sum(s["completion_tokens"] + s["judge_tokens"] for s in ran) / len(ran)
    return summary


def markdown(summary: dict) -> str:
    lines = []
    if "valid_structure" in summary:  # the model ran: the row eval prints for records, first
        lines += [
            "| strategy | beam width | questions | accuracy | valid structure | tokens/question |",
            "|---|---|---|---|---|---|",
            f"| {summary['strategy']} | {summary['beam_width']} | {summary['questions']} | {summary['accuracy']:.1%} "
            f"| {summary['valid_structure']:.1%} | {summary['tokens_per_question']:.1f} |",
            "",
        ]
    lines += ["| data | questions | accuracy |", "|---|---|---|"]
    lines += [f"| {name} | {v['questions']} | {v['accuracy']:.1%} |" for name, v in summary["by_data"].items()]
    lines.append(f"| **all** | {summary['questions']} | {summary['accuracy']:.1%} |")
    lines += ["", "| category | questions | accuracy |", "|---|---|---|"]
    lines += [f"| {name} | {v['questions']} | {v['accuracy']:.1%} |" for name, v in summary["by_category"].items()]
    return "\n".join(lines)


@contextlib.asynccontextmanager
async def _judge(args) -> AsyncIterator[OpenAnswerJudge | None]:
    """The --judge-url judge, its model the first it lists unless named; None without one."""
    if not args.judge_url:
        yield None
        return
    import httpx

    from server.bearer import auth_headers

    key = args.judge_url_api_key or os.environ.get("OPENAI_API_KEY")
    async with httpx.AsyncClient(base_url=args.judge_url.rstrip("/"), headers=auth_headers(key), timeout=300) as client:
        model = args.judge_url_model or (await client.get("/models")).json()["data"][0]["id"]
        yield OpenAnswerJudge(client, model)


async def _run(args) -> tuple[dict, list[dict]]:
    with tempfile.TemporaryDirectory(prefix="llava-o1-eval-") as image_dir:
        try:
            rows: list[tuple[str, Row]] = [
                (p, r) for p in args.data for r in read_benchmark(p, image_dir)[: args.limit]
            ]
        except (OSError, ValueError, SyntaxError) as exc:  # no such file, not base64, not an image, bad choices
            raise SystemExit(f"llava-o1 eval: cannot read the benchmark file: {exc}") from exc
        records = [{"id": row.index, "_question": row.prompt, "_image_path": row.image_path} for _, row in rows]
        if all(row.prediction is not None for _, row in rows):
            ran: list[dict] = [{"prediction": row.prediction or ""} for _, row in rows]
        else:
            ran = await _predictions(args, records)
    async with _judge(args) as judge:
        scored = await _score([r for _, r in rows], [x["prediction"] for x in ran], judge, args.concurrency)
    for item, (path, _), extra in zip(scored, rows, ran, strict=True):
        item.update({key: value for key, value in extra.items() if key != "prediction"}, data=path)
    summary = summarize_benchmark(scored)
    summary["judge_calls"] = judge.calls if judge else 0
    if "valid_structure" in summary:
        summary.update(strategy=args.strategy, beam_width=args.beam_width)
    return summary, scored


def run_benchmarks(args) -> int:
    if args.strategies:
        raise SystemExit("llava-o1 eval: table mode (--strategies) is for records, not benchmark files")
    if any(not is_benchmark_file(p) for p in args.data):
        raise SystemExit("llava-o1 eval: give benchmark files (.tsv) or records (.jsonl), not both")
    summary, scored = asyncio.run(_run(args))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({"summary": summary, "questions": scored}, indent=2) + "\n")
    print(markdown(summary))
    print(json.dumps(summary, indent=2))
    unjudged = summary["scored_by"].get("unjudged", 0)
    if unjudged:
        print(f"{unjudged} answers no rule could read scored 0: give --judge-url to judge them", file=sys.stderr)
    return 0
