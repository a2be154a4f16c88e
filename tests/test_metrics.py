"""/metrics, scraped by a real Prometheus server on loopback, and the Grafana dashboard's queries."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
from helpers import API_KEY, MODEL, STAGES, free_port, question, wait_for

from server.gpu_metrics import GPU_METRIC_NAMES

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def prometheus(server, tmp_path_factory):
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("the prometheus binary is missing: `make tools` (or apt-get install prometheus) installs it")
    folder = tmp_path_factory.mktemp("prometheus")
    config = folder / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        f"scrape_configs:\n  - job_name: llava-o1\n    static_configs:\n"
        f"      - targets: ['127.0.0.1:{server['port']}']\n"
    )
    port = free_port()
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={folder / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(folder / "prometheus.log").open("w"),
    )
    base = f"http://127.0.0.1:{port}"
    try:
        assert wait_for(lambda: query(base, 'up{job="llava-o1"}') == 1.0, 60), (folder / "prometheus.log").read_text()[
            -3000:
        ]
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def query(base: str, expr: str) -> float | None:
    try:
        response = httpx.get(f"{base}/api/v1/query", params={"query": expr}, timeout=5)
    except httpx.HTTPError:
        return None
    result = response.json()["data"]["result"]
    return float(result[0]["value"][1]) if result else None


def scraped_value(prom: str, server_metrics: str, expr: str, sample: str) -> float:
    """A value once Prometheus agrees with the server's own /metrics (no change in flight)."""
    value = exposed_value(server_metrics, sample)
    assert wait_for(lambda: (query(prom, expr) or 0.0) == value, 30), (expr, value, query(prom, expr))
    return value


def exposed_value(text: str, sample: str) -> float:
    name, _, labels = sample.partition("{")
    wanted = set(filter(None, labels.rstrip("}").split(",")))
    total = 0.0
    for line in text.splitlines():
        match = re.match(r"^([a-zA-Z_:][\w:]*)(\{[^}]*\})? (\S+)$", line)
        if match and match[1] == name:
            have = set(filter(None, (match[2] or "{}")[1:-1].split(",")))
            if wanted <= have:
                total += float(match[3])
    return total


def metrics_text(server) -> str:
    return httpx.get(server["base"] + "/metrics", timeout=10).text


# (strategy, beam width, requests): stage and none have one step per stage, so candidates are exact.
PLAN = [("stage", 3, 2), ("none", 1, 2), ("sentence", 2, 1), ("best_of_n", 2, 1)]


def test_prometheus_sees_exactly_the_requests_candidates_and_latencies(server, prometheus):
    counters = {}
    for strategy, _beam, _ in PLAN:
        for name, sample in [
            ("requests", f'llava_o1_requests_total{{strategy="{strategy}",outcome="success"}}'),
            ("latency", f'llava_o1_request_duration_seconds_count{{strategy="{strategy}"}}'),
            ("first", f'llava_o1_time_to_first_stage_seconds_count{{strategy="{strategy}"}}'),
            *[(f"cand-{s}", f'llava_o1_candidates_total{{strategy="{strategy}",stage="{s}"}}') for s in STAGES],
            *[
                (f"stage-{s}", f'llava_o1_stage_duration_seconds_count{{strategy="{strategy}",stage="{s}"}}')
                for s in STAGES
            ],
        ]:
            counters[(strategy, name)] = sample
    text = metrics_text(server)
    before = {k: scraped_value(prometheus, text, f"sum({v})", v) for k, v in counters.items()}

    headers = {"Authorization": f"Bearer {API_KEY}"}
    for strategy, beam, count in PLAN:
        for _ in range(count):
            response = httpx.post(
                server["base"] + "/v1/chat/completions",
                headers=headers,
                timeout=120,
                json={
                    "model": MODEL,
                    "messages": question(),
                    "max_tokens": 40,
                    "reasoning": {"strategy": strategy, "beam_width": beam},
                },
            )
            assert response.status_code == 200, response.text

    for strategy, beam, count in PLAN:

        def rose(name, by, strategy=strategy):
            expr = f"sum({counters[(strategy, name)]})"
            expected = before[(strategy, name)] + by
            assert wait_for(lambda: query(prometheus, expr) == expected, 30), (expr, query(prometheus, expr), expected)

        rose("requests", count)
        rose("latency", count)
        rose("first", count)
        if strategy in ("stage", "none"):
            for stage in STAGES:
                rose(f"cand-{stage}", beam * count)
                rose(f"stage-{stage}", count)


def test_the_verifiers_calls_tokens_and_retraces_are_counted_apart(server, prometheus):
    """Pointwise scores and a swires search (the test server retraces once: --swires-cutoff 30,
    --swires-max-retraces 1): Prometheus sees the verifier's calls by stage and its tokens, labelled
    by which verifier ran and in which form, and the retrace."""
    calls = {s: f'llava_o1_verifier_calls_total{{verifier="self",form="pointwise",stage="{s}"}}' for s in STAGES}
    tokens = 'llava_o1_verifier_tokens_total{verifier="self",form="pointwise"}'
    retraces = 'llava_o1_search_retraces_total{strategy="swires"}'
    text = metrics_text(server)
    before = {v: scraped_value(prometheus, text, f"sum({v})", v) for v in [*calls.values(), tokens, retraces]}
    spent = dict.fromkeys(before, 0.0)
    for reasoning in ({"strategy": "stage", "beam_width": 3, "verifier_form": "pointwise"}, {"strategy": "swires"}):
        response = httpx.post(
            server["base"] + "/v1/chat/completions",
            headers={"Authorization": f"Bearer {API_KEY}"},
            timeout=120,
            json={"model": MODEL, "messages": question(), "max_tokens": 40, "reasoning": {**reasoning, "trace": True}},
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["reasoning"]["verifier"] == "self" and body["reasoning"]["verifier_form"] == "pointwise"
        for stage in body["reasoning"]["trace"]["stages"]:
            spent[calls[stage["name"]]] += len(stage["scores"])
        spent[tokens] += body["usage"]["judge_tokens"]
        spent[retraces] += body["reasoning"]["retraces"]
        assert body["usage"]["judge_calls"] == sum(len(s["scores"]) for s in body["reasoning"]["trace"]["stages"])
    assert spent[retraces] == 1 and spent[tokens] > 0
    for sample, by in spent.items():
        expected = before[sample] + by
        assert wait_for(lambda s=sample, e=expected: query(prometheus, f"sum({s})") == e, 30), (sample, expected)


def test_metrics_cover_engine_search_and_vllm(server):
    text = metrics_text(server)
    for name in (
        "llava_o1_requests_in_flight",
        "llava_o1_requests_queued",
        "llava_o1_judge_matches_total",
        "llava_o1_tokens_total",
        "llava_o1_beam_width_bucket",
        "llava_o1_engine_running_requests",
        "llava_o1_engine_waiting_requests",
        "llava_o1_engine_kv_cache_usage_ratio",
        "llava_o1_engine_prefix_cache_hit_ratio",
        "llava_o1_gpu_count",
    ):
        assert re.search(rf"^{name}[{{ ]", text, re.M), name
    assert exposed_value(text, "llava_o1_gpu_count") == 0  # no GPU here: count 0, no per-device series
    assert "llava_o1_gpu_utilization_ratio" not in text
    assert "vllm:" in text  # vLLM's own series ride along


def test_metrics_are_open_by_default(server):
    assert httpx.get(server["base"] + "/metrics").status_code == 200


def test_every_dashboard_query_uses_an_exposed_metric(server):
    dashboard = json.loads((ROOT / "deploy" / "grafana-dashboard.json").read_text())
    exposed = set(re.findall(r"^([a-zA-Z_:][\w:]*)[{ ]", metrics_text(server), re.M)) | set(GPU_METRIC_NAMES)
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert exprs
    used = {name for e in exprs for name in re.findall(r"\b(llava_o1_\w+|vllm:\w+)", e)}
    assert used
    missing = sorted(name for name in used if name not in exposed)
    assert not missing, missing
