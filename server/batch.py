"""`llava-o1 run-batch -i in.jsonl -o out.jsonl`: OpenAI batch files through the chat API.

Each input line is a request, as OpenAI's Batch API and `vllm run-batch` take them:
  {"custom_id": "q1", "method": "POST", "url": "/v1/chat/completions", "body": {...}}
Each output line is its answer, in OpenAI's batch output format:
  {"id": "batch_req_...", "custom_id": "q1", "response": {"status_code": 200, "request_id": "...",
   "body": {...}}, "error": null}
A request the server refused is still an answer (its status code and error body). A line that is
not a request becomes an error line (`response` null, `error` with a code and message, and `line`,
its line number). Lines in the output already are skipped, so a stopped run resumes where it was.

In process (the default), the same app `serve` runs answers the lines, on an engine started here
from `serve`'s flags; with `--url`, a running server does. Either way every request goes through
the HTTP API's own validation, search and error mapping.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from server.bearer import auth_headers
from server.http_retry import post_with_backoff
from server.jsonl_output import written_lines

CHAT_URL = "/v1/chat/completions"
# Statuses that say "later", not "no": retried with backoff (Retry-After when the server sends it).
RETRIED_STATUSES = {429, 503}
RETRIES = 6


@dataclass(frozen=True)
class BatchRequest:
    line: int  # 1-based, in the input file
    custom_id: str
    body: dict[str, Any]


@dataclass(frozen=True)
class BadLine:
    line: int
    custom_id: str | None
    message: str


def parse_line(number: int, text: str, seen: set[str]) -> BatchRequest | BadLine:
    """One input line as a request, or why it is not one."""
    try:
        item = json.loads(text)
    except json.JSONDecodeError as exc:
        return BadLine(number, None, f"not JSON: {exc}")
    if not isinstance(item, dict):
        return BadLine(number, None, "a line must be a JSON object")
    custom_id = item.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        return BadLine(number, None, "custom_id must be a non-empty string")
    if custom_id in seen:  # named in the message only: the output's custom_ids stay unique
        return BadLine(number, None, f"custom_id '{custom_id}' appears more than once")
    seen.add(custom_id)
    if item.get("method", "POST") != "POST" or item.get("url") != CHAT_URL:
        return BadLine(number, custom_id, f"only POST {CHAT_URL} is supported")
    body = item.get("body")
    if not isinstance(body, dict):
        return BadLine(number, custom_id, "body must be a JSON object")
    if body.get("stream"):
        return BadLine(number, custom_id, "stream is not supported in a batch file")
    return BatchRequest(number, custom_id, body)


def done_in(output: Path) -> tuple[set[str], set[int]]:
    """custom_ids (and line numbers of bad lines without one) already answered in `output`."""
    ids, lines = set(), set()
    for item in written_lines(output):
        if item.get("custom_id"):
            ids.add(item["custom_id"])
        elif isinstance(item.get("line"), int):
            lines.add(item["line"])
    return ids, lines


def answer_line(request: BatchRequest, response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        body = {"error": {"message": response.text[:500], "type": "server_error", "param": None, "code": None}}
    return {
        "id": f"batch_req_{uuid.uuid4().hex}",
        "custom_id": request.custom_id,
        "response": {
            "status_code": response.status_code,
            "request_id": body.get("id") or f"req_{uuid.uuid4().hex}",
            "body": body,
        },
        "error": None,
    }


def error_line(bad: BadLine) -> dict[str, Any]:
    return {
        "id": f"batch_req_{uuid.uuid4().hex}",
        "custom_id": bad.custom_id,
        "response": None,
        "error": {"code": "invalid_line", "message": bad.message},
        "line": bad.line,
    }


async def send(client: httpx.AsyncClient, request: BatchRequest) -> httpx.Response:
    """POST one request; a busy server's 429 or 503 is retried with backoff."""
    return await post_with_backoff(
        client, CHAT_URL, request.body, retried=RETRIED_STATUSES.__contains__, retries=RETRIES
    )


@dataclass
class Tally:
    answered: int = 0
    refused: int = 0  # answered with a 4xx or 5xx
    bad_lines: int = 0
    skipped: int = 0
    failed: int = 0  # no answer at all (the server unreachable): not written, so a rerun retries them


async def run_batch(
    client: httpx.AsyncClient, input_path: Path, output_path: Path, concurrency: int, progress: bool = True
) -> Tally:
    from tqdm import tqdm

    done_ids, done_lines = done_in(output_path)
    tally = Tally()
    seen: set[str] = set()
    work: list[BatchRequest | BadLine] = []
    with input_path.open() as lines:
        for number, text in enumerate(lines, start=1):
            if not text.strip():
                continue
            item = parse_line(number, text, seen)
            if item.custom_id in done_ids or (item.custom_id is None and item.line in done_lines):
                tally.skipped += 1
            else:
                work.append(item)
    bar = tqdm(total=len(work), desc="run-batch", unit="req", file=sys.stderr, disable=not progress)
    pending = iter(work)

    with output_path.open("a") as out, bar:

        def write(line: dict[str, Any]) -> None:
            out.write(json.dumps(line) + "\n")
            out.flush()  # each answer is on disk before the next: a killed run resumes from there

        async def worker() -> None:
            for item in pending:  # shared: each worker takes the next line
                if isinstance(item, BadLine):
                    tally.bad_lines += 1
                    write(error_line(item))
                else:
                    try:
                        response = await send(client, item)
                    except httpx.HTTPError as exc:
                        tally.failed += 1
                        bar.write(f"run-batch: {item.custom_id}: no answer ({exc!r}); a rerun retries it")
                        bar.update()
                        continue
                    tally.answered += 1
                    tally.refused += response.status_code >= 400
                    write(answer_line(item, response))
                bar.update()

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return tally


def add_batch_arguments(parser: argparse.ArgumentParser) -> None:
    batch = parser.add_argument_group("batch")
    batch.add_argument("-i", "--input", type=Path, required=True, help="the batch file: one request per line")
    batch.add_argument("-o", "--output", type=Path, required=True, help="answers are appended here (resumable)")
    batch.add_argument(
        "--url", help="a running llava-o1 server to send the requests to (default: an engine in this process)"
    )
    batch.add_argument(
        "--concurrency", type=int, default=16, help="requests in flight at once (default 16, serve's default slots)"
    )
    batch.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar on stderr")
    batch.add_argument(
        "-v", "--verbose", action="store_true", help="show vLLM's per-weight loading warnings (quiet by default)"
    )


def build_parser() -> argparse.ArgumentParser:
    """In process: serve's flags (engine, search, limits) and the batch's."""
    from server.serve import build_parser as serve_parser

    parser = serve_parser()
    parser.prog = "llava-o1 run-batch"
    parser.description = "Answer an OpenAI batch file (JSONL) of chat completion requests."
    add_batch_arguments(parser)
    return parser


def remote_parser() -> argparse.ArgumentParser:
    """With --url: the batch's flags and the key only (no engine flags: vLLM is not even imported)."""
    parser = argparse.ArgumentParser(
        prog="llava-o1 run-batch", description="Answer an OpenAI batch file (JSONL) against a running server."
    )
    parser.add_argument("--api-key", default=os.environ.get("LLAVA_O1_API_KEY"), help="the server's bearer token")
    add_batch_arguments(parser)
    return parser


@contextlib.asynccontextmanager
async def in_process_client(args: argparse.Namespace) -> AsyncIterator[httpx.AsyncClient]:
    """The server's own app on an engine started here, reached without a socket."""
    from models.engine_factory import start_engine
    from server.app import create_app
    from server.serve import settings_from

    settings = settings_from(args)  # sets the default model too
    engine = start_engine(args)
    try:
        app = create_app(engine, settings)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://run-batch", headers=auth_headers(settings.api_key), timeout=None
        ) as client:
            yield client
    finally:
        await engine.shutdown()


def remote_client(url: str, api_key: str | None, concurrency: int) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=concurrency + 4)
    return httpx.AsyncClient(base_url=url.rstrip("/"), headers=auth_headers(api_key), timeout=None, limits=limits)


async def _main(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    client_context = (
        remote_client(args.url, args.api_key or os.environ.get("OPENAI_API_KEY"), args.concurrency)
        if args.url
        else in_process_client(args)
    )
    async with client_context as client:
        tally = await run_batch(client, args.input, args.output, args.concurrency, args.progress)
    seconds = time.perf_counter() - started
    print(
        f"run-batch: {tally.answered} answered ({tally.refused} with an error status), {tally.bad_lines} bad lines, "
        f"{tally.skipped} already in {args.output}, {tally.failed} without an answer; {seconds:.1f} s",
        file=sys.stderr,
    )
    return 1 if tally.failed else 0


def main(argv: Sequence[str]) -> int:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    if any(arg == "--url" or arg.startswith("--url=") for arg in argv):
        args = remote_parser().parse_args(list(argv))
    else:
        from models.engine_config import parse_engine_command

        args = parse_engine_command(build_parser, argv)
    if args.concurrency < 1:
        raise SystemExit("llava-o1 run-batch: --concurrency must be at least 1")
    if not args.input.exists():
        raise SystemExit(f"llava-o1 run-batch: no such file: {args.input}")
    return asyncio.run(_main(args))
