"""`python -m bench.batch_rate --url URL`: `llava-o1 run-batch` against a running server, compared
with a plain client pool sending the same requests at the same concurrency.

Each round sends N requests both ways (the order alternates between rounds, so neither always
meets a warmer server) and prints both request rates and their ratio; the summary is the median
and geometric mean of the ratios, and their spread. run-batch is timed as a whole command
(start-up, reading and writing the files included), as a user runs it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench.load import synthetic_questions
from server.bearer import auth_headers


def request_bodies(count: int, model: str, beam_width: int, per_stage: int) -> list[dict]:
    return [
        {
            "model": model,
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": text}],
                }
            ],
            "reasoning": {"strategy": "stage", "beam_width": beam_width, "max_tokens_per_stage": per_stage},
        }
        for url, text in synthetic_questions(count, seed=1)
    ]


async def client_pool(url: str, api_key: str | None, bodies: list[dict], concurrency: int) -> float:
    """Seconds for a pool of `concurrency` clients to get every answer (each must be a 200)."""
    pending = iter(bodies)
    limits = httpx.Limits(max_connections=concurrency + 4)
    async with httpx.AsyncClient(base_url=url, headers=auth_headers(api_key), timeout=None, limits=limits) as client:

        async def worker() -> None:
            for body in pending:
                response = await client.post("/v1/chat/completions", json=body)
                if response.status_code != 200:
                    raise RuntimeError(f"HTTP {response.status_code}: {response.text[:200]}")

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - started


def run_batch(url: str, api_key: str | None, bodies: list[dict], concurrency: int, folder: Path) -> float:
    """Seconds for `llava-o1 run-batch --url` to answer the same requests."""
    requests, output = folder / "in.jsonl", folder / "out.jsonl"
    requests.write_text(
        "".join(
            json.dumps({"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions", "body": body}) + "\n"
            for i, body in enumerate(bodies)
        )
    )
    output.unlink(missing_ok=True)
    command = [sys.executable, "-m", "server.cli", "run-batch", "--url", url, "-i", str(requests), "-o", str(output)]
    env = {**os.environ, "LLAVA_O1_API_KEY": api_key} if api_key else None
    started = time.perf_counter()
    subprocess.run([*command, "--concurrency", str(concurrency), "--no-progress"], check=True, env=env)
    seconds = time.perf_counter() - started
    answers = [json.loads(line) for line in output.read_text().splitlines()]
    failed = [a for a in answers if (a.get("response") or {}).get("status_code") != 200]
    if len(answers) != len(bodies) or failed:
        raise RuntimeError(f"run-batch answered {len(answers)} of {len(bodies)}, {len(failed)} not 200")
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.batch_rate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="a running llava-o1 server")
    parser.add_argument("--model", default=None, help="default: the server's model")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--beam-width", type=int, default=4)
    parser.add_argument("--max-tokens-per-stage", type=int, default=64)
    args = parser.parse_args()
    api_key = os.environ.get("LLAVA_O1_API_KEY")
    model = args.model or httpx.get(f"{args.url}/v1/models", headers=auth_headers(api_key)).json()["data"][0]["id"]
    bodies = request_bodies(args.requests, model, args.beam_width, args.max_tokens_per_stage)
    print(f"warming up ({args.concurrency} requests)", file=sys.stderr)
    asyncio.run(client_pool(args.url, api_key, bodies[: args.concurrency], args.concurrency))
    ratios, rounds = [], []
    with tempfile.TemporaryDirectory() as folder:
        for round_ in range(args.rounds):
            seconds = {}
            order = ("client", "run-batch") if round_ % 2 == 0 else ("run-batch", "client")
            for mode in order:
                if mode == "client":
                    seconds[mode] = asyncio.run(client_pool(args.url, api_key, bodies, args.concurrency))
                else:
                    seconds[mode] = run_batch(args.url, api_key, bodies, args.concurrency, Path(folder))
            rates = {mode: args.requests / s for mode, s in seconds.items()}
            ratio = rates["run-batch"] / rates["client"]
            ratios.append(ratio)
            rounds.append({"order": list(order), "requests_per_s": rates, "ratio": ratio})
            print(
                f"round {round_ + 1}: client {rates['client']:.2f} req/s, run-batch {rates['run-batch']:.2f} req/s,"
                f" ratio {ratio:.3f}",
                file=sys.stderr,
            )
    summary = {
        "requests": args.requests,
        "concurrency": args.concurrency,
        "beam_width": args.beam_width,
        "max_tokens_per_stage": args.max_tokens_per_stage,
        "rounds": rounds,
        "ratio_median": statistics.median(ratios),
        "ratio_geometric_mean": statistics.geometric_mean(ratios),
        "ratio_min": min(ratios),
        "ratio_max": max(ratios),
    }
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
