"""The benchmark's figures: one level (a mode at one concurrency) summarised, ratios between
modes, and the Markdown table and plot `llava-o1 bench` writes."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path

from bench.load import Sample


@dataclass
class Level:
    mode: str
    concurrency: int
    wall_s: float
    samples: list[Sample] = field(default_factory=list)
    failures: int = 0
    round_rates: list[float] = field(default_factory=list)  # requests/s of each round, when merged

    @classmethod
    def merged(cls, runs: list[Level]) -> Level:
        """The rounds of one mode and concurrency as one level: rates pooled over their summed time."""
        return cls(
            runs[0].mode,
            runs[0].concurrency,
            sum(r.wall_s for r in runs),
            [s for r in runs for s in r.samples],
            sum(r.failures for r in runs),
            [len(r.samples) / r.wall_s if r.wall_s else 0.0 for r in runs],
        )

    def summary(self) -> dict:
        latency_p50, latency_p95, latency_p99 = percentiles([s.latency_s for s in self.samples], 50, 95, 99)
        first_p50, first_p95 = percentiles(
            [s.first_stage_s for s in self.samples if s.first_stage_s is not None], 50, 95
        )
        tokens = sum(s.candidate_tokens for s in self.samples)
        return {
            "concurrency": self.concurrency,
            "requests": len(self.samples),
            "failures": self.failures,
            "wall_s": round(self.wall_s, 3),
            "requests_per_second": len(self.samples) / self.wall_s if self.wall_s else 0.0,
            "candidate_tokens_per_second": tokens / self.wall_s if self.wall_s else 0.0,
            "candidate_tokens_per_request": tokens / len(self.samples) if self.samples else 0.0,
            "latency_p50_s": latency_p50,
            "latency_p95_s": latency_p95,
            "latency_p99_s": latency_p99,
            "first_stage_p50_s": first_p50,
            "first_stage_p95_s": first_p95,
            "rounds_requests_per_second": [round(rate, 3) for rate in self.round_rates],
        }


def percentiles(values: list[float], *ps: int) -> list[float | None]:
    """The ps-th percentiles (linear interpolation between closest ranks); None without values."""
    if len(values) < 2:  # statistics.quantiles wants two points (before Python 3.13)
        return [values[0] if values else None for _ in ps]
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return [cuts[p - 1] for p in ps]


def mode_result(levels: list[Level]) -> dict:
    """A mode's figures: those of its last (highest) concurrency level, and every level's."""
    by_level = [lvl.summary() for lvl in levels]
    return {**by_level[-1], "by_concurrency": by_level}


def ratios(modes: dict[str, dict]) -> tuple[dict[str, float], dict[str, list[float]]]:
    """ours/reference, ours/raw and remote/ours request rates, pooled, and the last two round by round."""
    rps = {name: mode["requests_per_second"] for name, mode in modes.items()}
    pooled: dict[str, float] = {}
    by_round: dict[str, list[float]] = {}
    if "ours" in rps and "reference" in rps and rps["reference"]:
        pooled["ours_vs_reference"] = rps["ours"] / rps["reference"]
    if "ours" in rps and "raw" in rps and rps["raw"]:
        pooled["ours_vs_raw"] = rps["ours"] / rps["raw"]
        # Ours and raw take turns, so each round's pair shared the machine's state of the moment:
        # their spread says how far the pooled ratio can be trusted on a shared machine.
        rounds = zip(
            modes["ours"]["rounds_requests_per_second"], modes["raw"]["rounds_requests_per_second"], strict=True
        )
        by_round["ours_vs_raw"] = [ours / raw for ours, raw in rounds if raw]
    if "ours" in rps and "remote" in rps and rps["ours"]:
        pooled["remote_vs_ours"] = rps["remote"] / rps["ours"]
        rounds = zip(
            modes["remote"]["rounds_requests_per_second"], modes["ours"]["rounds_requests_per_second"], strict=True
        )
        by_round["remote_vs_ours"] = [remote / ours for remote, ours in rounds if ours]
    return pooled, by_round


def markdown_table(results: dict) -> str:
    rows = [
        "| mode | concurrency | requests/s | candidate tokens/s | p50 s | p95 s | p99 s | first stage p50 s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    fmt = lambda v: "-" if v is None else f"{v:.3f}"
    for name, mode in results["modes"].items():
        for level in mode["by_concurrency"]:
            rows.append(
                f"| {name} | {level['concurrency']} | {level['requests_per_second']:.3f} | "
                f"{level['candidate_tokens_per_second']:.1f} | {fmt(level['latency_p50_s'])} | "
                f"{fmt(level['latency_p95_s'])} | {fmt(level['latency_p99_s'])} | "
                f"{fmt(level['first_stage_p50_s'])} |"
            )
    if results.get("ratios"):
        rows.append("")
        by_round = results.get("ratios_by_round", {})
        for name, ratio in results["ratios"].items():
            rounds = by_round.get(name, [])
            spread = f" (by round: {', '.join(f'{r:.2f}x' for r in rounds)})" if len(rounds) > 1 else ""
            rows.append(f"- {name.replace('_', ' ')}: {ratio:.2f}x request rate{spread}")
    if wire := results.get("remote_wire_per_search"):
        rows.append(
            f"- remote, per search: {wire['requests']:.1f} engine requests, {wire['bytes'] / 1024:.1f} KiB sent, "
            f"{wire['image_uploads']:.2f} image uploads of {wire['image_bytes_per_upload'] / 1024:.1f} KiB "
            f"(with the image in every request: {wire['bytes_if_every_request_carried_the_image'] / 1024:.1f} KiB)"
        )
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
        right.plot(
            xs,
            [lvl["latency_p99_s"] for lvl in mode["by_concurrency"]],
            marker="x",
            linestyle="--",
            label=f"{name} p99",
        )
    left.set(title="Throughput", xlabel="concurrent clients", ylabel="requests / s", yscale="log")
    right.set(title="End-to-end latency", xlabel="concurrent clients", ylabel="seconds", yscale="log")
    for axis in (left, right):
        axis.grid(True, alpha=0.3)
        axis.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
