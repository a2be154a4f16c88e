"""`llava-o1 bench`: how fast the server answers, next to the published procedure and the engine's limit.

Modes, on one engine and model, one after another in one invocation:
- ours: K concurrent streaming clients against the real HTTP server (started here on loopback
  around the engine, or `--url` for a running one);
- reference: the published procedure's cost profile (stage_search/reference_procedure.py), one
  request at a time;
- raw: the same candidate tokens per request as ours measured, sampled plainly (n = beam width,
  one engine call, no stages, no judge), at the same concurrency, straight on the engine.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from server.bench_load import Progress, Sample, drive_in_subprocess, run_pool, synthetic_questions

MODES = ("ours", "reference", "raw")


@dataclass
class Level:
    mode: str
    concurrency: int
    wall_s: float
    samples: list[Sample] = field(default_factory=list)
    failures: int = 0
    round_rates: list[float] = field(default_factory=list)  # requests/s of each round, when merged

    @classmethod
    def merged(cls, runs: list["Level"]) -> "Level":
        """The rounds of one mode and concurrency as one level: rates pooled over their summed time."""
        return cls(runs[0].mode, runs[0].concurrency, sum(r.wall_s for r in runs),
                   [s for r in runs for s in r.samples], sum(r.failures for r in runs),
                   [len(r.samples) / r.wall_s if r.wall_s else 0.0 for r in runs])

    def summary(self) -> dict:
        latencies = sorted(s.latency_s for s in self.samples)
        firsts = sorted(s.first_stage_s for s in self.samples if s.first_stage_s is not None)
        tokens = sum(s.candidate_tokens for s in self.samples)
        return {
            "concurrency": self.concurrency,
            "requests": len(self.samples),
            "failures": self.failures,
            "wall_s": round(self.wall_s, 3),
            "requests_per_second": len(self.samples) / self.wall_s if self.wall_s else 0.0,
            "candidate_tokens_per_second": tokens / self.wall_s if self.wall_s else 0.0,
            "candidate_tokens_per_request": tokens / len(self.samples) if self.samples else 0.0,
            "latency_p50_s": percentile(latencies, 50),
            "latency_p95_s": percentile(latencies, 95),
            "latency_p99_s": percentile(latencies, 99),
            "first_stage_p50_s": percentile(firsts, 50),
            "first_stage_p95_s": percentile(firsts, 95),
            "rounds_requests_per_second": [round(rate, 3) for rate in self.round_rates],
        }


def percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    rank = (len(values) - 1) * p / 100
    low, high = int(rank), min(int(rank) + 1, len(values) - 1)
    return values[low] + (values[high] - values[low]) * (rank - low)


async def bench(args: argparse.Namespace) -> dict:
    from models.engine import ChatMessage, ChatPart, SamplingSettings
    from server.images import decode_data_url
    from server.settings import ImageLimits, ServerSettings
    from stage_search.config import SearchConfig
    from stage_search.reference_procedure import reference_search

    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    levels_wanted = sorted({int(c) for c in args.concurrency.split(",")})
    if unknown := set(modes) - set(MODES):
        raise SystemExit(f"llava-o1 bench: unknown modes {sorted(unknown)}; choose from {', '.join(MODES)}")
    if args.rounds < 1:
        raise SystemExit("llava-o1 bench: --rounds must be at least 1")
    if args.url and set(modes) - {"ours"}:
        raise SystemExit("llava-o1 bench: with --url only the 'ours' mode can run (the others need the engine)")
    questions = synthetic_questions(max(args.requests, args.reference_requests) + 8, seed=args.data_seed)
    config = SearchConfig(beam_width=args.beam_width, max_tokens_per_stage=args.max_tokens_per_stage)
    results: dict = {"modes": {}}

    engine = server = None
    if not args.url:
        import uvicorn

        from models.engine_factory import start_engine
        from server.app import create_app

        if args.model is None:
            # The benchmark's model is the random tiny one: it never ends a stage early, so every
            # mode samples the same number of tokens (the demo model, the serving default, does).
            from models.engine_factory import embedded_model

            args.model, name = embedded_model()
            args.served_model_name = args.served_model_name or [name]
        print("starting the engine ...", file=sys.stderr)
        engine = start_engine(args)
        settings = ServerSettings(search=config, max_beam_width=max(args.beam_width, 1),
                                  max_concurrent_searches=max(levels_wanted), max_queue=max(args.requests, 64))
        port = _free_port()
        server = uvicorn.Server(uvicorn.Config(create_app(engine, settings), host="127.0.0.1", port=port,
                                               log_level="warning"))
        server_task = asyncio.create_task(server.serve())
        while not server.started:
            await asyncio.sleep(0.05)
        base_url, model = f"http://127.0.0.1:{port}", engine.model_name
    else:
        base_url = args.url.rstrip("/").removesuffix("/v1")
        model = httpx.get(base_url + "/v1/models", headers=_auth(args)).json()["data"][0]["id"]

    async def drive(concurrency: int, requests: int, warmup: int, label: str = "") -> dict:
        return await drive_in_subprocess(
            base_url=base_url, model=model, api_key=args.api_key, concurrency=concurrency, requests=requests,
            warmup=warmup, beam_width=args.beam_width, max_tokens_per_stage=args.max_tokens_per_stage,
            data_seed=args.data_seed, label=label)

    def messages(i: int) -> list:
        url, text = questions[i]
        image = decode_data_url(url, ImageLimits(), "bench")
        return [ChatMessage("user", (ChatPart.of_image(image), ChatPart.of_text(text)))]

    ours_runs: dict[int, list[Level]] = {c: [] for c in levels_wanted}
    raw_runs: dict[int, list[Level]] = {c: [] for c in levels_wanted}

    def raw_tokens_per_candidate() -> int:
        """Raw samples as many candidate tokens per request as ours has so far (all rounds, levels)."""
        samples = [s for runs in ours_runs.values() for lvl in runs for s in lvl.samples]
        per_request = (statistics.mean(s.candidate_tokens for s in samples) if samples
                       else 4 * args.beam_width * args.max_tokens_per_stage)
        return max(1, round(per_request / args.beam_width))

    async def raw(i: int, per_candidate: int) -> Sample:
        prompt = engine.render(messages(i))
        started = time.perf_counter()
        generation = await engine.generate(
            prompt, SamplingSettings(n=args.beam_width, max_tokens=per_candidate, temperature=config.temperature,
                                     top_p=config.top_p, ignore_eos=True),
            job_id=f"bench-raw-{i}")
        return Sample(time.perf_counter() - started, None, sum(c.num_tokens for c in generation.candidates))

    try:
        # Warm-up through the server, whatever the modes: the first requests pay one-off costs.
        await drive(1, 0, warmup=4)
        # ours and raw take turns, round after round: a slow spell of this shared machine then
        # falls on both, instead of on whichever mode happened to run during it.
        for round_ in range(args.rounds):
            label = f" round {round_ + 1}/{args.rounds}" if args.rounds > 1 else ""
            for c in levels_wanted:
                if "ours" in modes:
                    level = await drive(c, args.requests, warmup=0, label=label)
                    samples = [Sample(**sample) for sample in level["samples"]]
                    ours_runs[c].append(Level("ours", c, level["wall_s"], samples, level["failures"]))
                if "raw" in modes:
                    per_candidate = raw_tokens_per_candidate()
                    samples, failures, wall = await run_pool(args.requests, c, lambda i: raw(i, per_candidate),
                                                             Progress(f"raw c={c}{label}", args.requests))
                    raw_runs[c].append(Level("raw", c, wall, samples, failures))
        if "ours" in modes:
            results["modes"]["ours"] = _mode_result([Level.merged(runs) for runs in ours_runs.values()])

        if "reference" in modes:
            async def reference(i: int) -> Sample:
                started = time.perf_counter()
                tokens, first = await reference_search(engine, messages(i), config, job_id=f"bench-ref-{i}", seed=i)
                return Sample(time.perf_counter() - started, first, tokens)

            samples, failures, wall = await run_pool(args.reference_requests, 1, reference,
                                                     Progress("reference c=1", args.reference_requests))
            results["modes"]["reference"] = _mode_result([Level("reference", 1, wall, samples, failures)])

        if "raw" in modes:
            results["modes"]["raw"] = _mode_result([Level.merged(runs) for runs in raw_runs.values()])
    finally:
        if server is not None:
            server.should_exit = True
            await server_task
        if engine is not None:
            await engine.shutdown()

    rps = {name: mode["requests_per_second"] for name, mode in results["modes"].items()}
    results["ratios"] = {}
    if "ours" in rps and "reference" in rps and rps["reference"]:
        results["ratios"]["ours_vs_reference"] = rps["ours"] / rps["reference"]
    if "ours" in rps and "raw" in rps and rps["raw"]:
        results["ratios"]["ours_vs_raw"] = rps["ours"] / rps["raw"]
        # Ours and raw take turns, so each round's pair shared the machine's state of the moment:
        # their spread says how far the pooled ratio can be trusted on a shared machine.
        rounds = zip(results["modes"]["ours"]["rounds_requests_per_second"],
                     results["modes"]["raw"]["rounds_requests_per_second"])
        results["ratios_by_round"] = {"ours_vs_raw": [ours / raw for ours, raw in rounds if raw]}
    results["settings"] = {"beam_width": args.beam_width, "max_tokens_per_stage": args.max_tokens_per_stage,
                           "requests": args.requests, "rounds": args.rounds,
                           "reference_requests": args.reference_requests,
                           "concurrency": levels_wanted, "model": model, "url": args.url,
                           "judge": "logprob (ours), generative (reference)"}
    results["date"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    results["command"] = "llava-o1 bench " + " ".join(args.argv)
    return results


def _mode_result(levels: list[Level]) -> dict:
    by_level = [lvl.summary() for lvl in levels]
    return {**by_level[-1], "by_concurrency": by_level}


def _auth(args) -> dict:
    return {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def markdown_table(results: dict) -> str:
    rows = ["| mode | concurrency | requests/s | candidate tokens/s | p50 s | p95 s | p99 s | first stage p50 s |",
            "|---|---|---|---|---|---|---|---|"]
    fmt = lambda v: "-" if v is None else f"{v:.3f}"
    for name, mode in results["modes"].items():
        for level in mode["by_concurrency"]:
            rows.append(f"| {name} | {level['concurrency']} | {level['requests_per_second']:.3f} | "
                        f"{level['candidate_tokens_per_second']:.1f} | {fmt(level['latency_p50_s'])} | "
                        f"{fmt(level['latency_p95_s'])} | {fmt(level['latency_p99_s'])} | "
                        f"{fmt(level['first_stage_p50_s'])} |")
    ratios = results.get("ratios", {})
    if ratios:
        rows.append("")
        by_round = results.get("ratios_by_round", {})
        for name, ratio in ratios.items():
            rounds = by_round.get(name, [])
            spread = f" (by round: {', '.join(f'{r:.2f}x' for r in rounds)})" if len(rounds) > 1 else ""
            rows.append(f"- {name.replace('_', ' ')}: {ratio:.2f}x request rate{spread}")
    return "\n".join(rows)


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for name, mode in results["modes"].items():
        xs = [lvl["concurrency"] for lvl in mode["by_concurrency"]]
        left.plot(xs, [lvl["requests_per_second"] for lvl in mode["by_concurrency"]], marker="o", label=name)
        right.plot(xs, [lvl["latency_p50_s"] for lvl in mode["by_concurrency"]], marker="o", label=f"{name} p50")
        right.plot(xs, [lvl["latency_p99_s"] for lvl in mode["by_concurrency"]], marker="x", linestyle="--",
                   label=f"{name} p99")
    left.set(title="Throughput", xlabel="concurrent clients", ylabel="requests / s", yscale="log")
    right.set(title="End-to-end latency", xlabel="concurrent clients", ylabel="seconds", yscale="log")
    for axis in (left, right):
        axis.grid(True, alpha=0.3)
        axis.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def build_parser() -> argparse.ArgumentParser:
    from models.engine_config import add_engine_arguments, make_parser

    parser = make_parser("llava-o1 bench")
    parser.description = "Benchmark the server against the published procedure and the engine's limit."
    group = parser.add_argument_group("benchmark")
    group.add_argument("--modes", default=",".join(MODES), help="comma-separated: ours, reference, raw")
    group.add_argument("--concurrency", default="16", help="concurrent clients; a comma-separated list for a sweep")
    group.add_argument("--beam-width", type=int, default=4)
    group.add_argument("--max-tokens-per-stage", type=int, default=48)
    group.add_argument("--requests", type=int, default=48, help="requests per concurrency level (ours, raw)")
    group.add_argument("--reference-requests", type=int, default=4, help="requests for the reference mode")
    group.add_argument("--rounds", type=int, default=3,
                       help="ours and raw take turns this many times; their figures pool all rounds")
    group.add_argument("--data-seed", type=int, default=0, help="seed of the synthetic images and questions")
    group.add_argument("--url", help="benchmark a running server instead (ours mode only)")
    group.add_argument("--api-key", default=os.environ.get("LLAVA_O1_API_KEY"))
    group.add_argument("--out", default="bench-results", help="folder for results.json and plot.png")
    add_engine_arguments(parser)
    return parser


def main(argv: Sequence[str]) -> int:
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")
    args = build_parser().parse_args(list(argv))
    args.argv = list(argv)
    results = asyncio.run(bench(args))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    plot(results, out / "plot.png")
    print(markdown_table(results))
    print(f"\nresults: {out / 'results.json'}, plot: {out / 'plot.png'}", file=sys.stderr)
    return 0
