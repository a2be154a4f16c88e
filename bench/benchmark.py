"""`llava-o1 bench`: how fast the server answers, next to the published procedure and the engine's limit.

Modes, on one engine and model, one after another in one invocation:
- ours: K concurrent streaming clients against the real HTTP server (started here on loopback
  around the engine, or `--url` for a running one);
- reference: the published procedure's cost profile (bench/reference_procedure.py), one
  request at a time;
- raw: the same candidate tokens per request as ours measured, sampled plainly (n = beam width,
  one engine call, no stages, no judge), at the same concurrency, straight on the engine;
- remote: as ours, but the server runs `--engine remote` on vLLM's own OpenAI server, started here
  on the same model (bench/remote_target.py); it also reports what crossed the wire per search.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import statistics
import sys
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from bench.load import Sample, drive_in_subprocess, run_pool, synthetic_questions
from bench.report import Level, markdown_table, mode_result, plot, ratios
from server.bearer import auth_headers

if TYPE_CHECKING:
    from models.engine import ChatMessage, Engine, EngineStats
    from stage_search.config import SearchConfig

MODES = ("ours", "reference", "raw", "remote")


@dataclass(frozen=True)
class Plan:
    """What one invocation measures, checked once."""

    modes: list[str]
    levels: list[int]  # concurrency levels, ascending
    questions: list[tuple[str, str]]  # (image data URL, question), the same for every mode


@dataclass
class Target:
    """Where `ours` sends its requests, and the engine the other modes use (None with --url)."""

    base_url: str
    model: str
    engine: Engine | None = None


def plan_from(args: argparse.Namespace) -> Plan:
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if unknown := set(modes) - set(MODES):
        raise SystemExit(f"llava-o1 bench: unknown modes {sorted(unknown)}; choose from {', '.join(MODES)}")
    if args.rounds < 1:
        raise SystemExit("llava-o1 bench: --rounds must be at least 1")
    if args.url and set(modes) - {"ours"}:
        raise SystemExit("llava-o1 bench: with --url only the 'ours' mode can run (the others need the engine)")
    questions = synthetic_questions(max(args.requests, args.reference_requests) + 8, seed=args.data_seed)
    return Plan(modes, sorted({int(c) for c in args.concurrency.split(",")}), questions)


@contextlib.asynccontextmanager
async def serving(args: argparse.Namespace, plan: Plan, config: SearchConfig) -> AsyncIterator[Target]:
    """The server under test: `--url`, or an engine started here with our HTTP server on loopback."""
    if args.url:
        base_url = args.url.rstrip("/").removesuffix("/v1")
        model = httpx.get(base_url + "/v1/models", headers=auth_headers(args.api_key)).json()["data"][0]["id"]
        yield Target(base_url, model)
        return

    from models.engine_factory import start_engine

    if args.model is None:
        # The benchmark's model is the random tiny one: it never ends a stage early, so every
        # mode samples the same number of tokens (the demo model, the serving default, does).
        from training.tiny_model import embedded_model

        args.model, name = embedded_model()
        args.served_model_name = args.served_model_name or [name]
    print("starting the engine ...", file=sys.stderr)
    engine = start_engine(args)
    try:
        async with serving_engine(engine, plan, config) as target:
            yield target
    finally:
        await engine.shutdown()


@contextlib.asynccontextmanager
async def serving_engine(engine: Engine, plan: Plan, config: SearchConfig) -> AsyncIterator[Target]:
    """Our HTTP server around `engine`, on loopback."""
    import uvicorn

    from server.app import create_app
    from server.settings import ServerSettings

    settings = ServerSettings(
        search=config,
        max_beam_width=max(config.beam_width, 1),
        max_concurrent_searches=max(plan.levels),
        max_queue=max(len(plan.questions), 64),
    )
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(engine, settings), host="127.0.0.1", port=port, log_level="warning")
    )
    server_task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            await asyncio.sleep(0.05)
        yield Target(f"http://127.0.0.1:{port}", engine.model_name, engine)
    finally:
        server.should_exit = True
        await server_task


@contextlib.asynccontextmanager
async def serving_remote(args: argparse.Namespace, plan: Plan, config: SearchConfig) -> AsyncIterator[Target | None]:
    """For the remote mode: our server with the remote engine on a vLLM server started here (None
    when the mode is not asked for)."""
    if "remote" not in plan.modes:
        yield None
        return
    from bench.remote_target import vllm_server
    from models.remote_engine import RemoteEngine

    with vllm_server(args) as url:
        served = args.served_model_name[0] if args.served_model_name else None
        engine = RemoteEngine.connect(url, served, send_priority=True)
        try:
            async with serving_engine(engine, plan, config) as target:
                yield target
        finally:
            await engine.shutdown()


async def run_ours(
    args: argparse.Namespace, target: Target, concurrency: int, requests: int, *, warmup: int = 0, label: str = ""
) -> Level:
    """One level of `ours`: streaming clients in a process of their own against the server."""
    level = await drive_in_subprocess(
        base_url=target.base_url,
        model=target.model,
        api_key=args.api_key,
        concurrency=concurrency,
        requests=requests,
        warmup=warmup,
        beam_width=args.beam_width,
        max_tokens_per_stage=args.max_tokens_per_stage,
        data_seed=args.data_seed,
        label=label,
    )
    return Level("ours", concurrency, level["wall_s"], [Sample(**s) for s in level["samples"]], level["failures"])


def question_messages(plan: Plan, i: int) -> list[ChatMessage]:
    from models.engine import ChatMessage, ChatPart
    from server.images import decode_data_url
    from server.settings import ImageLimits

    url, text = plan.questions[i]
    image = decode_data_url(url, ImageLimits(), "bench")
    return [ChatMessage("user", (ChatPart.of_image(image), ChatPart.of_text(text)))]


async def run_raw(
    args: argparse.Namespace,
    plan: Plan,
    engine: Engine,
    config: SearchConfig,
    concurrency: int,
    per_candidate: int,
    label: str = "",
) -> Level:
    """One level of `raw`: beam-width candidates of `per_candidate` tokens per request, one engine call."""
    from models.engine import SamplingSettings

    settings = SamplingSettings(
        n=args.beam_width,
        max_tokens=per_candidate,
        temperature=config.sampling_temperature,
        top_p=config.top_p,
        ignore_eos=True,
    )

    async def one(i: int) -> Sample:
        prompt = engine.render(question_messages(plan, i))
        started = time.perf_counter()
        generation = await engine.generate(prompt, settings, job_id=f"bench-raw-{i}")
        return Sample(time.perf_counter() - started, None, sum(c.num_tokens for c in generation.candidates))

    samples, failures, wall = await run_pool(args.requests, concurrency, one, f"raw c={concurrency}{label}")
    return Level("raw", concurrency, wall, samples, failures)


async def run_reference(args: argparse.Namespace, plan: Plan, engine: Engine, config: SearchConfig) -> Level:
    """The published procedure's profile, one question at a time."""
    from bench.reference_procedure import reference_search

    async def one(i: int) -> Sample:
        started = time.perf_counter()
        tokens, first = await reference_search(
            engine, question_messages(plan, i), config, job_id=f"bench-ref-{i}", seed=i
        )
        return Sample(time.perf_counter() - started, first, tokens)

    samples, failures, wall = await run_pool(args.reference_requests, 1, one, "reference c=1")
    return Level("reference", 1, wall, samples, failures)


def raw_tokens_per_candidate(args: argparse.Namespace, ours: dict[int, list[Level]]) -> int:
    """Raw samples as many candidate tokens per request as ours has so far (all rounds, levels)."""
    samples = [s for runs in ours.values() for level in runs for s in level.samples]
    per_request = (
        statistics.mean(s.candidate_tokens for s in samples)
        if samples
        else 4 * args.beam_width * args.max_tokens_per_stage
    )
    return max(1, round(per_request / args.beam_width))


async def bench(args: argparse.Namespace) -> dict:
    """Every mode asked for; returns the results as `results.json` holds them."""
    from stage_search.config import SearchConfig

    plan = plan_from(args)
    config = SearchConfig(beam_width=args.beam_width, max_tokens_per_stage=args.max_tokens_per_stage)
    ours: dict[int, list[Level]] = {c: [] for c in plan.levels}
    raw: dict[int, list[Level]] = {c: [] for c in plan.levels}
    modes: dict[str, dict] = {}
    remote: dict[int, list[Level]] = {c: [] for c in plan.levels}
    wire: dict[str, float] = {}
    async with serving(args, plan, config) as target, serving_remote(args, plan, config) as remote_target:
        # Warm-up through the server, whatever the modes: the first requests pay one-off costs.
        await run_ours(args, target, 1, 0, warmup=4)
        if remote_target is not None:
            await run_ours(args, remote_target, 1, 0, warmup=4)
            wire_before = remote_target.engine.stats() if remote_target.engine else None
        # ours and raw take turns, round after round: a slow spell of this shared machine then
        # falls on both, instead of on whichever mode happened to run during it.
        for round_ in range(args.rounds):
            label = f" round {round_ + 1}/{args.rounds}" if args.rounds > 1 else ""
            for c in plan.levels:
                if "ours" in plan.modes:
                    ours[c].append(await run_ours(args, target, c, args.requests, label=label))
                if remote_target is not None:
                    remote[c].append(await run_ours(args, remote_target, c, args.requests, label=f" remote{label}"))
                if "raw" in plan.modes and target.engine is not None:
                    per_candidate = raw_tokens_per_candidate(args, ours)
                    raw[c].append(await run_raw(args, plan, target.engine, config, c, per_candidate, label))
        if "ours" in plan.modes:
            modes["ours"] = mode_result([Level.merged(runs) for runs in ours.values()])
        if "reference" in plan.modes and target.engine is not None:
            modes["reference"] = mode_result([await run_reference(args, plan, target.engine, config)])
        if "raw" in plan.modes:
            modes["raw"] = mode_result([Level.merged(runs) for runs in raw.values()])
        if remote_target is not None:
            modes["remote"] = mode_result([Level.merged(runs) for runs in remote.values()])
            searches = sum(len(level.samples) for runs in remote.values() for level in runs)
            if remote_target.engine is not None and wire_before is not None and searches:
                wire = wire_per_search(wire_before, remote_target.engine.stats(), searches)
    pooled, by_round = ratios(modes)
    results: dict = {"modes": modes, "ratios": pooled}
    if by_round:
        results["ratios_by_round"] = by_round
    if wire:
        results["remote_wire_per_search"] = wire
    results["settings"] = {
        "beam_width": args.beam_width,
        "max_tokens_per_stage": args.max_tokens_per_stage,
        "requests": args.requests,
        "rounds": args.rounds,
        "reference_requests": args.reference_requests,
        "concurrency": plan.levels,
        "model": target.model,
        "url": args.url,
        "judge": "logprob (ours), generative (reference)",
    }
    results["date"] = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    results["command"] = "llava-o1 bench " + " ".join(args.argv)
    return results


def wire_per_search(before: EngineStats, after: EngineStats, searches: int) -> dict[str, float]:
    """What the remote engine sent per search: requests, bytes, image uploads; and the bytes it
    would have sent with the image in every request, for comparison."""
    requests = (after.wire_requests - before.wire_requests) / searches
    sent = (after.wire_bytes - before.wire_bytes) / searches
    uploads = (after.wire_image_uploads - before.wire_image_uploads) / searches
    image_bytes = (after.wire_image_bytes - before.wire_image_bytes) / searches
    per_upload = image_bytes / uploads if uploads else 0.0
    return {
        "requests": requests,
        "bytes": sent,
        "image_uploads": uploads,
        "image_bytes_per_upload": per_upload,
        "bytes_if_every_request_carried_the_image": sent + (requests - uploads) * per_upload,
    }


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def build_parser() -> argparse.ArgumentParser:
    from models.engine_config import add_engine_arguments, make_parser

    parser = make_parser(
        "llava-o1 bench",
        "Benchmark the server against the published procedure and the engine's limit (docs/benchmarks.md).",
        verbose_flag=True,
    )
    group = parser.add_argument_group("benchmark")
    group.add_argument("--modes", default="ours,reference,raw", help="comma-separated: ours, reference, raw, remote")
    group.add_argument("--concurrency", default="16", help="concurrent clients; a comma-separated list for a sweep")
    group.add_argument("--beam-width", type=int, default=4)
    group.add_argument("--max-tokens-per-stage", type=int, default=48)
    group.add_argument("--requests", type=int, default=48, help="requests per concurrency level (ours, raw)")
    group.add_argument("--reference-requests", type=int, default=4, help="requests for the reference mode")
    group.add_argument(
        "--rounds", type=int, default=3, help="ours and raw take turns this many times; their figures pool all rounds"
    )
    group.add_argument("--data-seed", type=int, default=0, help="seed of the synthetic images and questions")
    group.add_argument("--url", help="benchmark a running server instead (ours mode only)")
    group.add_argument("--api-key", default=os.environ.get("LLAVA_O1_API_KEY"))
    group.add_argument("--out", default="bench-results", help="folder for results.json and plot.png")
    add_engine_arguments(parser)
    return parser


def main(argv: Sequence[str]) -> int:
    from models.engine_config import parse_engine_command

    args = parse_engine_command(build_parser, argv)
    args.argv = list(argv)
    results = asyncio.run(bench(args))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    plot(results, out / "plot.png")
    print(markdown_table(results))
    print(f"\nresults: {out / 'results.json'}, plot: {out / 'plot.png'}", file=sys.stderr)
    return 0
