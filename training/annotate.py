"""`llava-o1 annotate`: turn VQA records (image, question, short answer) into LLaVA-o1-100k records
(the same question, answered in four stages) with a teacher model behind any OpenAI-compatible API,
as the paper built its training set.

For each record the teacher gets the image, the question and the known answer, and writes the four
stages (`training/teacher_prompts.py`). The result is kept only if every stage is there, once, in
order and non-empty, and the conclusion gives the known answer: by option letter or by text and
number, and, for free-form answers no rule can compare, by a second teacher call
(`training/annotation_check.py`). Kept records go to `--out`, rejected ones with their reason to
`--rejects`. A 429 or 5xx, a timeout or a refused connection is retried with backoff; a record that
still gets no answer is written nowhere, so the next run tries it again. Records already in either
file are skipped: a stopped run resumes where it was, without asking the teacher again.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from server.bearer import auth_headers
from server.http_retry import later, post_with_backoff
from server.jsonl_output import written_lines
from stage_search.stages import StageSet
from training.annotation_check import KnownAnswer, Rejected, known_answer, staged_text
from training.answer_match import options_in_question, yes_or_no
from training.labels import expected_answer
from training.records import IMAGE_MARK, image_data_url, with_question
from training.teacher_prompts import PROMPT_STYLES, agreement_body, annotation_body

CHAT_URL = "/chat/completions"  # under the teacher's base URL, which ends in /v1 as OpenAI's does


class NoAnswer(Exception):
    """The teacher gave no usable answer after the retries (down, overloaded, timing out): the record
    is not written, and a later run tries it again."""


@dataclass
class Tally:
    kept: int = 0
    rejected: int = 0
    skipped: int = 0  # already in the output or the rejects file
    failed: int = 0  # no answer from the teacher: written nowhere, retried by the next run
    teacher_calls: int = 0  # HTTP requests sent, retries included
    reasons: Counter = field(default_factory=Counter)  # rejections by kind

    async def count_call(self, request: httpx.Request) -> None:
        self.teacher_calls += 1


@dataclass(frozen=True)
class Teacher:
    client: httpx.AsyncClient
    model: str
    temperature: float
    max_tokens: int
    retries: int
    extra_body: dict[str, Any]
    prompt_style: str = PROMPT_STYLES[0]

    async def ask(self, body: dict[str, Any]) -> str:
        """The text of the teacher's reply; Rejected when it refuses the request (a 4xx) or answers
        with something that is not a chat completion, NoAnswer when it never answers."""
        body = {
            **body,
            "model": self.model,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            **self.extra_body,
        }
        try:
            response = await post_with_backoff(
                self.client, CHAT_URL, body, retried=later, retries=self.retries, transport_errors=True
            )
        except httpx.TransportError as exc:
            raise NoAnswer(f"{type(exc).__name__} after {self.retries} retries") from exc
        if later(response.status_code):
            raise NoAnswer(f"HTTP {response.status_code} after {self.retries} retries")
        if response.status_code != 200:
            message = f"the teacher refused the request: HTTP {response.status_code} {_error_message(response)}"
            raise Rejected(message, "teacher")
        try:
            content = response.json()["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise Rejected("the teacher's reply is not a chat completion", "teacher", response.text[:2000]) from None
        if not isinstance(content, str):
            raise Rejected("the teacher's reply has no text content", "teacher", response.text[:2000])
        return content


def _error_message(response: httpx.Response) -> str:
    try:
        return str(response.json()["error"]["message"])[:300]
    except (ValueError, KeyError, TypeError):
        return response.text[:300]


def read_vqa(path: Path) -> list[tuple[int, dict | str]]:
    """(line number, record) for each record of the input, with `_image_path` and `_question` as
    eval reads them; a line that is not a record gives why instead, and becomes a reject."""
    records: list[tuple[int, dict | str]] = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append((number, with_question(json.loads(line), path.parent)))
        except (ValueError, KeyError, TypeError, AttributeError, StopIteration):
            records.append((number, "not a record with a human turn in `conversations`"))
    return records


def record_key(record: dict, number: int) -> str:
    """A record's id, or its line number in the input when it has none."""
    return str(record.get("id") or f"line-{number}")


def options_of(record: dict) -> dict[str, str]:
    """Multiple-choice options: the record's `options` list (synth-data's), else those in its question."""
    if isinstance(record.get("options"), list):
        return {chr(ord("A") + i): str(text) for i, text in enumerate(record["options"])}
    return options_in_question(record["_question"])


async def annotate_record(teacher: Teacher, record: dict, stages: StageSet) -> str:
    """The staged answer of a record whose result passes every check; Rejected, with the reason and
    the reply, otherwise."""
    has_answer = record.get("answer") is not None or any(t.get("from") == "gpt" for t in record["conversations"])
    if not has_answer:
        raise Rejected("no known answer: neither an `answer` field nor a gpt turn", "input")
    known: KnownAnswer = known_answer(expected_answer(record), options_of(record))
    if record.get("_image_path") and not Path(record["_image_path"]).is_file():
        raise Rejected(f"no image file {record['image']!r} next to the input", "input")
    image = image_data_url(record["_image_path"]) if record.get("_image_path") else None
    body = annotation_body(stages, record["_question"], known.text, image, known.multiple_choice, teacher.prompt_style)
    reply = await teacher.ask(body)
    try:
        staged, parts = staged_text(reply, stages)
        conclusion = parts[stages.last.name]
        if known.needs_teacher(conclusion):
            verdict = yes_or_no(await teacher.ask(agreement_body(record["_question"], known.text, conclusion)))
            if verdict is None:
                raise Rejected("the teacher's check answered neither yes nor no", "answer")
            if verdict == "no":
                raise Rejected(f"the teacher's check says {conclusion[:80]!r} does not give {known.text!r}", "answer")
    except Rejected as rejected:
        rejected.reply = rejected.reply or reply
        raise
    return staged


def kept_record(record: dict, staged: str, out_dir: Path) -> dict:
    """The record in the LLaVA-o1-100k layout: its own fields, its question, the staged answer, and
    the image path relative to the output file."""
    kept = {key: value for key, value in record.items() if not key.startswith("_")}
    if record.get("_image_path"):
        kept["image"] = os.path.relpath(Path(record["_image_path"]).resolve(), out_dir.resolve())
    human = next(t["value"] for t in record["conversations"] if t["from"] == "human")
    if record.get("_image_path") and IMAGE_MARK not in human:
        human = f"{IMAGE_MARK}\n{human}"
    kept["conversations"] = [{"from": "human", "value": human}, {"from": "gpt", "value": staged}]
    return kept


async def annotate(
    teacher: Teacher,
    input_path: Path,
    output_path: Path,
    rejects_path: Path,
    concurrency: int,
    stages: StageSet,
    progress: bool = True,
) -> Tally:
    from tqdm import tqdm

    tally = Tally()
    teacher.client.event_hooks["request"].append(tally.count_call)
    done = {str(item.get("id")) for path in (output_path, rejects_path) for item in written_lines(path)}
    work = []
    for number, record in read_vqa(input_path):
        key = record_key(record, number) if isinstance(record, dict) else f"line-{number}"
        if key in done:
            tally.skipped += 1
        else:
            done.add(key)  # an id twice in the input is annotated once
            work.append((key, record))
    pending = iter(work)
    bar = tqdm(total=len(work), desc="annotate", unit="record", file=sys.stderr, disable=not progress)

    with output_path.open("a") as out, rejects_path.open("a") as rejects, bar:

        def write(file, line: dict) -> None:
            file.write(json.dumps(line) + "\n")
            file.flush()  # on disk before the next record: a killed run resumes from here

        async def worker() -> None:
            for key, record in pending:  # shared: each worker takes the next record
                try:
                    if isinstance(record, str):
                        raise Rejected(record, "input")
                    staged = await annotate_record(teacher, record, stages)
                except NoAnswer as exc:
                    tally.failed += 1
                    bar.write(f"annotate: {key}: no answer from the teacher ({exc}); a rerun tries it again")
                except Rejected as exc:
                    tally.rejected += 1
                    tally.reasons[exc.kind] += 1
                    write(rejects, {"id": key, "reason": exc.reason, "kind": exc.kind, "reply": exc.reply})
                else:
                    tally.kept += 1
                    write(out, {**kept_record(record, staged, output_path.parent), "id": key})
                bar.set_postfix(kept=tally.kept, rejected=tally.rejected, refresh=False)
                bar.update()

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return tally


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llava-o1 annotate",
        description="Rewrite VQA records' answers into four stages with a teacher model (LLaVA-o1-100k records).",
    )
    parser.add_argument("--in", dest="input", type=Path, required=True, help="VQA records (.jsonl, LLaVA format)")
    parser.add_argument("--out", type=Path, required=True, help="kept records are appended here (resumable)")
    parser.add_argument("--rejects", type=Path, help="rejected records and why (default: OUT's name + .rejects.jsonl)")
    parser.add_argument("--teacher-url", required=True, help="an OpenAI-compatible API, e.g. https://api.openai.com/v1")
    parser.add_argument("--teacher-model", required=True, help="the teacher's model name, e.g. gpt-4o")
    parser.add_argument(
        "--api-key",
        default=os.environ.get("TEACHER_API_KEY") or os.environ.get("OPENAI_API_KEY"),
        help="the teacher's key (default: $TEACHER_API_KEY, then $OPENAI_API_KEY)",
    )
    parser.add_argument("--concurrency", type=int, default=8, help="records in flight at once (default 8)")
    parser.add_argument("--temperature", type=float, default=0.0)
    parser.add_argument("--max-tokens", type=int, default=2048, help="per teacher reply")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per teacher request before a retry")
    parser.add_argument("--retries", type=int, default=6, help="retries of a 429, 5xx or timeout, with backoff")
    parser.add_argument(
        "--extra-body",
        type=json.loads,
        default={},
        help='JSON merged into every teacher request, e.g. \'{"reasoning": {"output": "tagged"}}\' for a '
        "llava-o1 server as the teacher",
    )
    parser.add_argument(
        "--prompt",
        choices=PROMPT_STYLES,
        default=PROMPT_STYLES[0],
        help="answer-given (default, the paper's way): the teacher is told the answer and the four-stage "
        "format; question-only: the record's question as it stands, for a teacher that already answers in "
        "stages (a LLaVA-o1 model), the known answer only checking the result",
    )
    parser.add_argument("--stage-names", default="SUMMARY,CAPTION,REASONING,CONCLUSION", help="the four tag names")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar on stderr")
    return parser


async def _main(args: argparse.Namespace) -> int:
    stages = StageSet.from_names(tuple(n.strip() for n in args.stage_names.split(",")))
    rejects = args.rejects or args.out.with_name(args.out.stem + ".rejects.jsonl")
    started = time.perf_counter()
    limits = httpx.Limits(max_connections=args.concurrency + 4)
    async with httpx.AsyncClient(
        base_url=args.teacher_url.rstrip("/"), headers=auth_headers(args.api_key), timeout=args.timeout, limits=limits
    ) as client:
        teacher = Teacher(
            client, args.teacher_model, args.temperature, args.max_tokens, args.retries, args.extra_body, args.prompt
        )
        tally = await annotate(teacher, args.input, args.out, rejects, args.concurrency, stages, args.progress)
    reasons = ", ".join(f"{count} {kind}" for kind, count in tally.reasons.most_common())
    print(
        f"annotate: {tally.kept} kept, {tally.rejected} rejected, {tally.skipped} already done, "
        f"{tally.failed} without an answer from the teacher; {tally.teacher_calls} teacher calls; "
        f"{time.perf_counter() - started:.1f} s; kept in {args.out}, rejected in {rejects}"
        + (f"\nrejected by kind: {reasons} (reasons in {rejects})" if reasons else ""),
        file=sys.stderr,
    )
    return 1 if tally.failed else 0


def main(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(list(argv))
    if args.concurrency < 1:
        raise SystemExit("llava-o1 annotate: --concurrency must be at least 1")
    if not args.input.exists():
        raise SystemExit(f"llava-o1 annotate: no such file: {args.input}")
    if not isinstance(args.extra_body, dict):
        raise SystemExit("llava-o1 annotate: --extra-body must be a JSON object")
    return asyncio.run(_main(args))
