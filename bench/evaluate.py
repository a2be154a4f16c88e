"""`llava-o1 eval`: score a search strategy on LLaVA-o1-100k-format records with known answers.

Each question goes through the search, in this process on an engine (`--model`, default the
demo model) or against a running server (`--url`). The answer is read from the CONCLUSION (the
option letter for multiple choice) and compared with the record's `answer` (or, without one, with
the conclusion of its own staged answer). Reported: accuracy, the share of answers with a valid
four-stage structure (every stage non-empty, and every stage closed by the model's own closing tag
rather than cut at the token limit), and tokens per question, as a Markdown table and JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path

LETTER = re.compile(r"\b([A-D])\b")
_ANSWER_PREFIX = re.compile(r"^(the\s+)?(final\s+)?answer\s*(is)?\s*[:\-]?\s*", re.IGNORECASE)


def expected_answer(record: dict) -> str:
    if record.get("answer") is not None:
        return str(record["answer"])
    gpt = next(t["value"] for t in record["conversations"] if t["from"] == "gpt")
    match = re.search(r"<CONCLUSION>(.*?)</CONCLUSION>", gpt, re.S)
    return (match.group(1) if match else gpt).strip()


def extract_answer(conclusion: str, multiple_choice: bool) -> str:
    """The answer a conclusion gives: its first option letter, or its text without "The answer is"."""
    text = conclusion.strip()
    if multiple_choice:
        match = LETTER.search(text)
        return match.group(1) if match else ""
    return _ANSWER_PREFIX.sub("", text).strip().rstrip(".").strip().lower()


def is_correct(record: dict, conclusion: str) -> bool:
    multiple_choice = "options" in record
    expected = expected_answer(record)
    got = extract_answer(conclusion, multiple_choice)
    return got == (expected if multiple_choice else extract_answer(expected, False))


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


def read_questions(path: str | Path) -> list[dict]:
    path = Path(path)
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    for record in records:
        record["_image_path"] = str(path.parent / record["image"]) if record.get("image") else None
        human = next(t["value"] for t in record["conversations"] if t["from"] == "human")
        record["_question"] = human.replace("<image>", "").strip()
    return records


def summarize(scored: list[dict], strategy: str, beam_width: int) -> dict:
    n = len(scored)
    return {
        "strategy": strategy,
        "beam_width": beam_width,
        "questions": n,
        "accuracy": sum(s["correct"] for s in scored) / n if n else 0.0,
        "valid_structure": sum(s["valid"] for s in scored) / n if n else 0.0,
        "completion_tokens_per_question": sum(s["completion_tokens"] for s in scored) / n if n else 0.0,
        "judge_tokens_per_question": sum(s["judge_tokens"] for s in scored) / n if n else 0.0,
        "by_kind": _by_kind(scored),
    }


def _by_kind(scored: list[dict]) -> dict:
    kinds: dict[str, list[dict]] = {}
    for s in scored:
        kinds.setdefault(s["kind"], []).append(s)
    return {
        k: {"questions": len(v), "accuracy": sum(x["correct"] for x in v) / len(v)} for k, v in sorted(kinds.items())
    }


def markdown(summaries: list[dict]) -> str:
    rows = [
        "| strategy | beam width | questions | accuracy | valid structure "
        "| completion tokens/question | judge tokens/question |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in summaries:
        rows.append(
            f"| {s['strategy']} | {s['beam_width']} | {s['questions']} | {s['accuracy']:.1%} | "
            f"{s['valid_structure']:.1%} | {s['completion_tokens_per_question']:.1f} | "
            f"{s['judge_tokens_per_question']:.1f} |"
        )
    return "\n".join(rows)


async def _score_in_process(args, records: list[dict]) -> list[dict]:
    from PIL import Image

    from models.engine import ChatMessage, ChatPart
    from models.engine_factory import start_engine
    from server.default_model import use_default_model
    from stage_search.config import SearchConfig
    from stage_search.search import run_search

    use_default_model(args)
    engine = start_engine(args)
    config = SearchConfig(
        strategy=args.strategy,
        beam_width=args.beam_width,
        max_tokens_per_stage=args.max_tokens_per_stage,
        temperature=args.temperature,
        seed=args.search_seed,
        stage_prompt=args.stage_prompt,
    )
    limit = asyncio.Semaphore(args.concurrency)

    async def one(record: dict) -> dict:
        parts = []
        if record["_image_path"]:
            with Image.open(record["_image_path"]) as opened:
                parts.append(ChatPart.of_image(opened.convert("RGB")))
        parts.append(ChatPart.of_text(record["_question"]))
        async with limit:
            result = await run_search(engine, [ChatMessage("user", tuple(parts))], config)
        return _score(record, result.answer, result.to_dict())

    try:
        return await asyncio.gather(*(one(r) for r in records))
    finally:
        await engine.shutdown()


async def _score_over_http(args, records: list[dict]) -> list[dict]:
    import base64

    import httpx

    base = args.url.rstrip("/").removesuffix("/v1")
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    limit = asyncio.Semaphore(args.concurrency)
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=600) as client:
        model = (await client.get("/v1/models")).json()["data"][0]["id"]

        async def one(record: dict) -> dict:
            content = []
            if record["_image_path"]:
                data = base64.b64encode(Path(record["_image_path"]).read_bytes()).decode()
                content.append({"type": "image_url", "image_url": {"url": f"data:image/png;base64,{data}"}})
            content.append({"type": "text", "text": record["_question"]})
            body = {
                "model": model,
                "messages": [{"role": "user", "content": content}],
                "temperature": args.temperature,
                "reasoning": {
                    "strategy": args.strategy,
                    "beam_width": args.beam_width,
                    "trace": True,
                    "max_tokens_per_stage": args.max_tokens_per_stage,
                    "stage_prompt": args.stage_prompt,
                },
            }
            if args.search_seed is not None:
                body["seed"] = args.search_seed
            async with limit:
                response = await client.post("/v1/chat/completions", json=body)
            response.raise_for_status()
            trace = response.json()["reasoning"]["trace"]
            return _score(record, trace["answer"], trace)

        return await asyncio.gather(*(one(r) for r in records))


def _score(record: dict, conclusion: str, trace: dict) -> dict:
    return {
        "id": record["id"],
        "kind": record.get("kind", "all"),
        "correct": is_correct(record, conclusion),
        "valid": valid_structure(trace),
        "conclusion": conclusion.strip(),
        "completion_tokens": trace["usage"]["completion_tokens"],
        "judge_tokens": trace["usage"]["judge_tokens"],
    }


def build_parser() -> argparse.ArgumentParser:
    from models.engine_config import add_engine_arguments, make_parser
    from stage_search.config import STAGE_PROMPTS, STRATEGY_NAMES

    parser = make_parser(
        "llava-o1 eval",
        "Score a search strategy on records with known answers (accuracy, structure, tokens).",
        verbose_flag=True,
    )
    group = parser.add_argument_group("evaluation")
    group.add_argument("--data", required=True, help="a .jsonl file of records (e.g. synth-data's test.jsonl)")
    group.add_argument("--strategy", default="none", choices=STRATEGY_NAMES)
    group.add_argument("--beam-width", type=int, default=1)
    group.add_argument("--max-tokens-per-stage", type=int, default=96)
    group.add_argument("--temperature", type=float, default=0.0, help="0: greedy (the default)")
    group.add_argument("--search-seed", type=int, help="seed for reproducible candidates (as in ask)")
    group.add_argument(
        "--stage-prompt",
        choices=STAGE_PROMPTS,
        default="auto",
        help="ask for the four stages in the prompt: auto does for models whose name does not say "
        "they were trained on them (a trained model given by path wants never)",
    )
    group.add_argument("--concurrency", type=int, default=16, help="questions in flight at once")
    group.add_argument("--limit", type=int, help="only the first N questions")
    group.add_argument("--url", help="score a running server instead of starting an engine here")
    group.add_argument("--api-key", default=os.environ.get("LLAVA_O1_API_KEY"))
    group.add_argument("--json-out", help="also write the summary and per-question results here")
    add_engine_arguments(parser)
    return parser


def main(argv: Sequence[str]) -> int:
    from models.engine_config import parse_engine_command

    args = parse_engine_command(build_parser, argv)
    records = read_questions(args.data)[: args.limit]
    scored = asyncio.run(_score_over_http(args, records) if args.url else _score_in_process(args, records))
    summary = summarize(scored, args.strategy, args.beam_width)
    if args.json_out:  # first: the file is written even if stdout goes away
        Path(args.json_out).write_text(json.dumps({"summary": summary, "questions": scored}, indent=2) + "\n")
    print(markdown([summary]))
    print(json.dumps(summary, indent=2))
    print(f"scored {len(scored)} questions from {args.data}", file=sys.stderr)
    return 0
