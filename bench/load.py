"""The benchmark's load generator: synthetic questions, a bounded pool of clients, and the HTTP
client of the `ours` mode, which runs in a process of its own.

Why a separate process: clients of a real server are elsewhere. Run inside the server's process,
their JSON and SSE parsing would hold the server's interpreter lock and count as server cost.
`python -m bench.load ...` runs one concurrency level and prints its samples as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import random
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass

import httpx
from tqdm import tqdm

from server.bearer import auth_headers

COLORS = ["red", "green", "blue", "yellow", "purple"]
SHAPES = ["circle", "square", "triangle"]
API_KEY_VARIABLE = "LLAVA_O1_BENCH_API_KEY"  # the client's key: not on its command line, where ps shows it
PROGRESS_FORMAT = "{desc}: {n_fmt}/{total_fmt} requests [{elapsed}]"


@dataclass
class Sample:
    latency_s: float
    first_stage_s: float | None
    candidate_tokens: int


def synthetic_questions(count: int, seed: int = 0) -> list[tuple[str, str]]:
    """(data URL, question) pairs: shapes on a canvas, and a question about them."""
    from PIL import Image, ImageDraw

    rng = random.Random(seed)
    items = []
    for i in range(count):
        image = Image.new("RGB", (112, 112), "white")
        draw = ImageDraw.Draw(image)
        for _ in range(rng.randint(2, 6)):
            x, y, r = rng.randint(10, 100), rng.randint(10, 100), rng.randint(5, 12)
            draw.ellipse((x - r, y - r, x + r, y + r), fill=rng.choice(COLORS))
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
        items.append((url, f"How many {rng.choice(COLORS)} {rng.choice(SHAPES)}s are in the image? ({i})"))
    return items


async def run_pool(
    count: int, concurrency: int, work: Callable[[int], Awaitable[Sample]], label: str
) -> tuple[list[Sample], int, float]:
    """Run work(i) for i in range(count) with at most `concurrency` at once; progress on stderr.
    Returns the samples, the number of failed requests and the wall time."""
    queue = list(range(count))
    results: list[Sample] = []
    failures = 0
    progress = tqdm(total=count, desc=f"  {label}", file=sys.stderr, bar_format=PROGRESS_FORMAT)

    async def worker() -> None:
        nonlocal failures
        while queue:
            i = queue.pop(0)
            try:
                results.append(await work(i))
            except Exception as exc:  # a failed request is counted, not fatal to the benchmark
                failures += 1
                progress.write(f"  request {i} failed: {exc!r}", file=sys.stderr)
            progress.update()

    started = time.perf_counter()
    with progress:
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return results, failures, time.perf_counter() - started


async def ours_request(client: httpx.AsyncClient, model: str, url: str, text: str, beam: int, per_stage: int) -> Sample:
    body = {
        "model": model,
        "stream": True,
        "stream_options": {"include_usage": True},
        "messages": [
            {
                "role": "user",
                "content": [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": text}],
            }
        ],
        "reasoning": {"strategy": "stage", "beam_width": beam, "max_tokens_per_stage": per_stage},
    }
    started = time.perf_counter()
    first, tokens = None, 0
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
        if response.status_code != 200:
            raise RuntimeError(f"HTTP {response.status_code}: {(await response.aread())[:200]!r}")
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if "error" in chunk:
                raise RuntimeError(chunk["error"]["message"])
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
            for choice in chunk.get("choices", []):
                delta = choice["delta"]
                text = delta.get("reasoning_content") or delta.get("content") or ""
                # The opening tag is sent when a stage starts; stage text only once it is decided.
                if first is None and delta.get("stage") and text.strip() and not text.strip().startswith("<"):
                    first = time.perf_counter() - started
    return Sample(time.perf_counter() - started, first, tokens)


async def drive(args: argparse.Namespace) -> dict:
    """One concurrency level of `ours` against the server at args.base_url (args.requests from the
    question list, then args.warmup more not counted, run first)."""
    questions = synthetic_questions(args.requests + args.warmup, seed=args.data_seed)
    limits = httpx.Limits(max_connections=max(args.concurrency, args.warmup) + 4)
    async with httpx.AsyncClient(
        base_url=args.base_url, timeout=600, headers=auth_headers(args.api_key), limits=limits
    ) as client:
        ask = lambda i: ours_request(client, args.model, *questions[i], args.beam_width, args.max_tokens_per_stage)
        if args.warmup:
            # The first requests pay one-off costs (compilation, caches).
            await run_pool(args.warmup, args.warmup, lambda i: ask(args.requests + i), "warm-up")
        if not args.requests:
            return {"wall_s": 0.0, "failures": 0, "samples": []}
        samples, failures, wall = await run_pool(
            args.requests, args.concurrency, ask, f"ours c={args.concurrency}{args.label}"
        )
    return {"wall_s": wall, "failures": failures, "samples": [asdict(s) for s in samples]}


async def drive_in_subprocess(
    *,
    base_url: str,
    model: str,
    api_key: str | None,
    concurrency: int,
    requests: int,
    warmup: int,
    beam_width: int,
    max_tokens_per_stage: int,
    data_seed: int,
    label: str = "",
) -> dict:
    """Run `drive` in a child process (its progress goes to our stderr) and return its result."""
    argv = [
        sys.executable,
        "-m",
        "bench.load",
        "--base-url",
        base_url,
        "--model",
        model,
        "--concurrency",
        str(concurrency),
        "--requests",
        str(requests),
        "--warmup",
        str(warmup),
        "--beam-width",
        str(beam_width),
        "--max-tokens-per-stage",
        str(max_tokens_per_stage),
        "--data-seed",
        str(data_seed),
        "--label",
        label,
    ]
    env = {**os.environ, API_KEY_VARIABLE: api_key} if api_key else None
    child = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE, env=env)
    out, _ = await child.communicate()
    if child.returncode != 0:
        raise RuntimeError(f"the benchmark's client process failed (exit {child.returncode})")
    return json.loads(out)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.load")
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--concurrency", type=int, required=True)
    parser.add_argument("--requests", type=int, required=True)
    parser.add_argument("--warmup", type=int, default=0)
    parser.add_argument("--beam-width", type=int, required=True)
    parser.add_argument("--max-tokens-per-stage", type=int, required=True)
    parser.add_argument("--data-seed", type=int, default=0)
    parser.add_argument("--label", default="", help="added to the progress line (e.g. the round)")
    args = parser.parse_args()
    args.api_key = os.environ.get(API_KEY_VARIABLE)
    print(json.dumps(asyncio.run(drive(args))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
