"""The fleet topology on loopback, every part real: two vLLM replicas (vLLM's own OpenAI server on
the tiny model), vllm-router in front of them with `--policy consistent_hash`, and two `llava-o1
serve --engine remote` front ends on the router. The second front end sends its judge's calls to a
third vLLM server that serves another tiny model (`--judge-engine-url`).

Replica A is the session's `vllm_server` (the remote engine's suites use it too, so it is never
killed here); replica B and the judge server are this module's own.
"""

from __future__ import annotations

import contextlib
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from helpers import (
    API_KEY,
    MODEL,
    chat_body,
    free_port,
    kill_server,
    launch_server,
    launch_vllm_server,
    metric_value,
    wait_for,
    wait_until_answering,
)

AUTH = {"Authorization": f"Bearer {API_KEY}"}
JUDGE_MODEL = "tiny-judge"
JUDGE_SEED = 4321  # another model of the tiny shape (training/tiny_model.py)


@dataclass
class Fleet:
    replicas: list[str]  # base URLs: A (the session's server), B
    replica_b: subprocess.Popen
    router: str
    judge: str
    front_ends: list[str]  # the second one judges on `judge`


def finished(base: str) -> float:
    """Engine requests a replica has finished (vLLM counts each of a request's n samples)."""
    return metric_value(base, "vllm:request_success_total")


def launch_router(workers: list[str], env: dict[str, str], log_path: Path) -> tuple[subprocess.Popen, str]:
    """vllm-router (the Rust router from PyPI) with consistent hashing on the session header."""
    port = free_port()
    args = ["vllm-router", "--host", "127.0.0.1", "--port", str(port), "--worker-urls", *workers]
    # Its own Prometheus listener, on a free port of its own (its default port may be taken).
    args += ["--prometheus-host", "127.0.0.1", "--prometheus-port", str(free_port())]
    # Health checks every second, so a dead replica leaves the hash ring quickly.
    args += ["--policy", "consistent_hash", "--health-check-interval-secs", "1", "--health-failure-threshold", "1"]
    with open(log_path, "w") as log:
        proc = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    return wait_until_answering(proc, f"http://127.0.0.1:{port}", "/readiness", log_path, timeout=60)


@pytest.fixture(scope="module")
def fleet(vllm_server, tiny_model_dir, cli_env, tmp_path_factory):
    from training.tiny_model import build_tiny_model

    logs = tmp_path_factory.mktemp("fleet")
    judge_dir = build_tiny_model(logs / "judge-model", seed=JUDGE_SEED)
    # Every process started is stopped at the end, also when a later one fails to start.
    with contextlib.ExitStack() as started:

        def keep(launched: tuple[subprocess.Popen, str]) -> tuple[subprocess.Popen, str]:
            started.callback(lambda: launched[0].poll() is None and kill_server(launched[0]))
            return launched

        # Replica B and the judge server start side by side (each takes a minute or two here).
        with ThreadPoolExecutor(2) as pool:
            b_started = pool.submit(launch_vllm_server, tiny_model_dir, cli_env, logs / "replica-b.log")
            judge_started = pool.submit(
                launch_vllm_server, judge_dir, cli_env, logs / "judge.log", served_name=JUDGE_MODEL
            )
            replica_b, b_url = keep(b_started.result())
            _, judge_url = keep(judge_started.result())
        _, router_url = keep(launch_router([vllm_server, b_url], cli_env, logs / "router.log"))
        remote = ["--engine", "remote", "--engine-url", router_url, "--engine-priority", "--api-key", API_KEY]
        judged = [*remote, "--judge-engine-url", judge_url, "--judge-model", JUDGE_MODEL]
        front_ends = [
            keep(launch_server(remote, cli_env, logs / "front-end-1.log"))[1],
            keep(launch_server(judged, cli_env, logs / "front-end-2.log"))[1],
        ]
        yield Fleet([vllm_server, b_url], replica_b, router_url, judge_url, front_ends)


def search(front_end: str, max_tokens_per_stage: int = 16, timeout: float = 120) -> httpx.Response:
    body = chat_body(reasoning={"beam_width": 4, "max_tokens_per_stage": max_tokens_per_stage}, max_tokens=None)
    return httpx.post(f"{front_end}/v1/chat/completions", json=body, headers=AUTH, timeout=timeout)


def test_every_request_of_a_search_lands_on_one_replica_through_either_front_end(fleet):
    for i in range(6):
        front_end = fleet.front_ends[i % 2]
        before = [finished(r) for r in fleet.replicas]
        answer = search(front_end)
        assert answer.status_code == 200, answer.text
        assert answer.json()["model"] == MODEL
        # vLLM counts a finished request once it has answered; give its counter a moment.
        wait_for(lambda b=before: sum(finished(r) for r in fleet.replicas) > sum(b), timeout=5)
        time.sleep(0.5)
        deltas = [finished(r) - b for r, b in zip(fleet.replicas, before, strict=True)]
        # Beam 4, four stages: 16 candidates and 12 judge matches on the replica it was routed to.
        on = [i for i, d in enumerate(deltas) if d > 0]
        assert len(on) == 1, f"one search's engine requests went to several replicas: {deltas}"
        if front_end == fleet.front_ends[0]:
            assert deltas[on[0]] == 28, deltas


def test_the_image_crosses_the_wire_once_per_search(fleet):
    front_end = fleet.front_ends[0]
    requests_before = metric_value(front_end, "llava_o1_engine_wire_requests_total")
    uploads_before = metric_value(front_end, "llava_o1_engine_image_uploads_total")
    assert search(front_end).status_code == 200
    requests = metric_value(front_end, "llava_o1_engine_wire_requests_total") - requests_before
    uploads = metric_value(front_end, "llava_o1_engine_image_uploads_total") - uploads_before
    # Four stage calls (n=4 each) and twelve matches: 16 HTTP requests, one of them with the image.
    assert (requests, uploads) == (16, 1)


def test_the_judge_runs_on_its_own_engine(fleet):
    plain, judged = fleet.front_ends
    before = finished(fleet.judge)
    assert search(plain).status_code == 200
    time.sleep(0.5)
    assert finished(fleet.judge) == before, "a front end without --judge-engine-url used the judge"
    replicas_before = sum(finished(r) for r in fleet.replicas)
    answer = search(judged)
    assert answer.status_code == 200, answer.text
    # A verifier of its own scores pointwise by default: beam 4, four stages, so the judge server
    # answered sixteen scores (one per candidate) and the replicas sampled only the sixteen candidates.
    assert answer.json()["reasoning"]["verifier_form"] == "pointwise"
    assert answer.json()["usage"]["judge_calls"] == 16
    assert wait_for(lambda: finished(fleet.judge) - before == 16, timeout=5), finished(fleet.judge) - before
    assert wait_for(lambda: sum(finished(r) for r in fleet.replicas) - replicas_before == 16, timeout=5)


def test_killing_a_replica_mid_load_ends_its_searches_cleanly_and_the_survivor_serves(fleet):
    results: list = []

    def run(front_end: str) -> None:
        try:
            answer = search(front_end, max_tokens_per_stage=400, timeout=120)
            results.append((answer.status_code, answer.json()))
        except httpx.HTTPError as exc:
            results.append((None, repr(exc)))

    threads = [threading.Thread(target=run, args=(fleet.front_ends[i % 2],), daemon=True) for i in range(12)]
    for thread in threads:
        thread.start()
    replica_b = fleet.replicas[1]
    loaded = wait_for(lambda: metric_value(replica_b, "vllm:num_requests_running") > 0, timeout=60)
    assert loaded, f"no search was routed to replica B: {results}"
    kill_server(fleet.replica_b)
    killed = time.monotonic()
    for thread in threads:
        thread.join(timeout=120)
    assert len(results) == 12, "a search hung after its replica died"
    # The router retries a dead replica's requests on the survivor (the image follows: a cache miss
    # there is answered by sending it again), or the front end answers 502/503 in OpenAI's shape.
    for status, body in results:
        assert status == 200 or (status in (502, 503) and body["error"]["code"]), (status, body)
    assert time.monotonic() - killed < 120
    # Later searches, through both front ends, succeed on the survivor.
    for front_end in fleet.front_ends:
        for _ in range(2):
            answer = search(front_end)
            assert answer.status_code == 200, answer.text
    for front_end in fleet.front_ends:
        assert httpx.get(f"{front_end}/health", timeout=5).status_code == 200
