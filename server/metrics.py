"""The server's Prometheus metrics (prefix llava_o1_): requests, search work, engine load, GPUs.

The search layer knows nothing of Prometheus: the HTTP layer records what a finished search's
trace says, and the engine and GPU figures are read at scrape time.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from models.engine import Engine
from server.gpu_metrics import GpuCollector
from stage_search.trace import SearchResult, StepTrace

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160, 320)
BEAM_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 32, 64)


class EngineCollector:
    """Engine load from the engine's own statistics (vLLM's scheduler stats), read per scrape."""

    def __init__(self, engine: Engine):
        self._engine = engine

    def collect(self):
        stats = self._engine.stats()
        for family_type, name, help_text, value in (
            (
                GaugeMetricFamily,
                "llava_o1_engine_running_requests",
                "Engine requests being computed",
                stats.running_requests,
            ),
            (
                GaugeMetricFamily,
                "llava_o1_engine_waiting_requests",
                "Engine requests waiting to be scheduled",
                stats.waiting_requests,
            ),
            (
                GaugeMetricFamily,
                "llava_o1_engine_kv_cache_usage_ratio",
                "Share of the KV cache in use (0..1)",
                stats.kv_cache_usage,
            ),
            (
                GaugeMetricFamily,
                "llava_o1_engine_prefix_cache_hit_ratio",
                "Prompt tokens found in the prefix cache since start (0..1)",
                stats.prefix_cache_hit_ratio,
            ),
            (
                CounterMetricFamily,
                "llava_o1_engine_wire_requests",
                "Requests sent to a remote engine",
                stats.wire_requests,
            ),
            (
                CounterMetricFamily,
                "llava_o1_engine_wire_bytes",
                "Request body bytes sent to a remote engine",
                stats.wire_bytes,
            ),
            (
                CounterMetricFamily,
                "llava_o1_engine_image_uploads",
                "Remote engine requests that carried image data (the rest name images by digest)",
                stats.wire_image_uploads,
            ),
        ):
            family = family_type(name, help_text)
            family.add_metric([], value)
            yield family


class ServerMetrics:
    def __init__(self, engine: Engine, gpu: GpuCollector | None = None):
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "llava_o1_requests",
            "Chat completion requests, by strategy and outcome",
            ["strategy", "outcome"],
            registry=r,
        )
        self.in_flight = Gauge("llava_o1_requests_in_flight", "Chat completion requests being served", registry=r)
        self.queued = Gauge("llava_o1_requests_queued", "Searches waiting for a free search slot", registry=r)
        self.latency = Histogram(
            "llava_o1_request_duration_seconds",
            "End-to-end latency of successful requests",
            ["strategy"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.first_stage = Histogram(
            "llava_o1_time_to_first_stage_seconds",
            "Time from request to the first decided stage",
            ["strategy"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.stage_latency = Histogram(
            "llava_o1_stage_duration_seconds",
            "Time spent on each stage",
            ["strategy", "stage"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.candidates = Counter(
            "llava_o1_candidates", "Candidates generated, by stage", ["strategy", "stage"], registry=r
        )
        self.matches = Counter(
            "llava_o1_judge_matches", "Pairwise judge matches, by stage", ["strategy", "stage"], registry=r
        )
        self.tokens = Counter(
            "llava_o1_tokens", "Tokens processed, by kind (prompt, completion, judge, cached)", ["kind"], registry=r
        )
        self.verifier_calls = Counter(
            "llava_o1_verifier_calls",
            "The verifier's engine calls (pairwise matches, pointwise scores), by verifier ('self' or its "
            "model), form and stage",
            ["verifier", "form", "stage"],
            registry=r,
        )
        self.verifier_tokens = Counter(
            "llava_o1_verifier_tokens",
            "The verifier's prompt and verdict tokens, by verifier and form (the generator's are llava_o1_tokens)",
            ["verifier", "form"],
            registry=r,
        )
        self.retraces = Counter(
            "llava_o1_search_retraces",
            "Times a search went back to an earlier stage (swires: new captions), by strategy",
            ["strategy"],
            registry=r,
        )
        self.beam_width = Histogram(
            "llava_o1_beam_width", "Beam width used per request", ["strategy"], buckets=BEAM_BUCKETS, registry=r
        )
        r.register(EngineCollector(engine))
        r.register(gpu or GpuCollector())

    def record_search(self, result: SearchResult, first_stage_seconds: float | None) -> None:
        strategy = result.strategy
        self.beam_width.labels(strategy).observe(result.beam_width)
        if first_stage_seconds is not None:
            self.first_stage.labels(strategy).observe(first_stage_seconds)
        verifier = (result.verifier, result.verifier_form)
        for stage in result.stages:
            if stage.steps:
                self.stage_latency.labels(strategy, stage.name).observe(stage.seconds)
                self.candidates.labels(strategy, stage.name).inc(len(stage.candidates))
                self.matches.labels(strategy, stage.name).inc(len(stage.matches))
                self._count_verifier_calls(verifier, stage.name, stage.steps)
        for step in result.answer_steps:  # best-of-N: whole answers
            self.candidates.labels(strategy, "ANSWER").inc(len(step.candidates))
            self.matches.labels(strategy, "ANSWER").inc(len(step.matches))
        self._count_verifier_calls(verifier, "ANSWER", result.answer_steps)
        if result.retraces:
            self.retraces.labels(strategy).inc(result.retraces)
        usage = result.usage
        self.verifier_tokens.labels(*verifier).inc(usage.judge_tokens)
        for kind, value in (
            ("prompt", usage.prompt_tokens),
            ("completion", usage.completion_tokens),
            ("judge", usage.judge_tokens),
            ("cached", usage.cached_tokens),
        ):
            self.tokens.labels(kind).inc(value)

    def _count_verifier_calls(self, verifier: tuple[str, str], stage: str, steps: list[StepTrace]) -> None:
        calls = sum(m.judge_calls for step in steps for m in step.matches) + sum(len(step.scores) for step in steps)
        if calls:
            self.verifier_calls.labels(*verifier, stage).inc(calls)

    def record_request(self, strategy: str, outcome: str, seconds: float) -> None:
        self.requests.labels(strategy, outcome).inc()
        if outcome == "success":
            self.latency.labels(strategy).observe(seconds)


def outcome_of(status: int) -> str:
    if status < 400:
        return "success"
    if status == 429:
        return "rejected"
    if status == 504:
        return "timeout"
    if status == 499:
        return "cancelled"
    return "client_error" if status < 500 else "server_error"
