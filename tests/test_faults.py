"""Faults, for real: the engine core killed under load, SIGTERM with a stream in flight, the hf
engine's loop dying. Each server here is its own `llava-o1 serve` subprocess, since each test ends it."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import threading
import time
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from helpers import (
    API_KEY,
    MODEL,
    NO_EOS,
    SMALL,
    chat_body,
    image_question,
    kill_server,
    launch_server,
    payload,
    requests_in_flight,
    small_server,
    wait_for,
)

from models.engine import EngineError, SamplingSettings
from server.lifecycle import STOPPING_GRACE_S

AUTH = {"Authorization": f"Bearer {API_KEY}"}
# Four searches of four candidates a stage, each candidate sampled to its limit (NO_EOS): 44,620
# sampled tokens a request, 20 s alone here and over a minute for four at once. The kill comes
# seconds after they start, however late a scrape of the busy server comes back.
KILL_ME = chat_body(reasoning={"beam_width": 4, "max_tokens_per_stage": 2000}, n=4, max_tokens=None, **NO_EOS)


def tiny_server(tiny_model_dir: Path, env: dict[str, str], log_path: Path, *extra: str):
    args = ["--model", str(tiny_model_dir), "--served-model-name", MODEL, "--api-key", API_KEY]
    return launch_server([*args, "--max-model-len", "4096", *extra], env, log_path)


def engine_core_pids(server_pid: int) -> list[int]:
    """The vLLM engine core processes started by the server (named VLLM::EngineCore)."""
    children = subprocess.run(["pgrep", "-P", str(server_pid)], capture_output=True, text=True).stdout.split()
    return [int(pid) for pid in children if "EngineCor" in Path(f"/proc/{pid}/comm").read_text()]


def process_tree(pid: int) -> str:
    """`ps` of the server's process group, for a failure message."""
    return subprocess.run(["ps", "-o", "pid,ppid,stat,comm", "-g", str(pid)], capture_output=True, text=True).stdout


def is_gone(pid: int) -> bool:
    """Dead: no such process, or a zombie its parent has not reaped yet."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z")
    except (FileNotFoundError, ProcessLookupError):
        return True


def print_log_tail(log_path: Path, chars: int = 4000) -> None:
    """The server's last words, shown by pytest when the test fails (CI keeps no files)."""
    print(f"--- tail of {log_path.name} ---\n{log_path.read_text()[-chars:]}")


def post_in_thread(base: str, payload: dict, results: list, timeout: float = 120) -> threading.Thread:
    """POST in the background; appends (status, json body, seconds it ended at) to results."""

    def run():
        try:
            response = httpx.post(f"{base}/v1/chat/completions", json=payload, headers=AUTH, timeout=timeout)
            answer = response.json() if response.headers.get("content-type") == "application/json" else response.text
            results.append((response.status_code, answer, time.monotonic()))
        except httpx.HTTPError as exc:
            results.append((None, repr(exc), time.monotonic()))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_killing_the_engine_core_fails_requests_with_503_and_exits_non_zero(tiny_model_dir, cli_env, tmp_path_factory):
    log_path = tmp_path_factory.mktemp("engine-death") / "serve.log"
    proc, base = tiny_server(tiny_model_dir, cli_env, log_path, "--engine-death-exit-after", "2")
    try:
        results: list = []
        threads = [post_in_thread(base, KILL_ME, results) for _ in range(4)]
        in_flight = wait_for(lambda: requests_in_flight(base) == 4, timeout=30)
        assert in_flight, f"the four searches were never all in flight: {results}"
        cores = engine_core_pids(proc.pid)
        assert cores, f"no engine core process found:\n{process_tree(proc.pid)}"
        tree = process_tree(proc.pid)
        for pid in cores:
            os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()
        assert wait_for(lambda: all(is_gone(pid) for pid in cores), timeout=5), f"{cores} outlived SIGKILL:\n{tree}"
        for thread in threads:
            thread.join(timeout=30)
        assert len(results) == 4, f"requests still open 30 s after the kill: {results}"
        assert all(ended >= killed for _, _, ended in results), f"a search ended before the kill: {results}"
        all_refused = all(status == 503 for status, _, _ in results)
        assert all_refused, f"{results}\nkilled {cores} of\n{tree}"
        assert all(error["error"]["code"] == "engine_unavailable" for _, error, _ in results)
        assert max(ended for _, _, ended in results) - killed < 2.0, "in-flight requests did not end within 2 s"
        refused = httpx.post(f"{base}/v1/chat/completions", json=chat_body(), headers=AUTH, timeout=10)
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "engine_unavailable"
        assert httpx.get(f"{base}/health", timeout=5).status_code == 503
        code = proc.wait(timeout=20)
        exited = time.monotonic() - killed
        assert code != 0, "a server whose engine died must exit non-zero, for its supervisor"
        # 2 s configured, plus noticing (a 0.5 s poll), the HTTP server's stop and the engine's cleanup.
        assert exited < 12, f"exited {exited:.1f} s after the engine died"
        assert "the engine died" in log_path.read_text()
    finally:
        if proc.poll() is None:
            kill_server(proc)
        print_log_tail(log_path)


def read_stream(base: str, payload: dict, lines: list[str], started: threading.Event) -> threading.Thread:
    def run():
        try:
            with httpx.stream(
                "POST", f"{base}/v1/chat/completions", json=payload, headers=AUTH, timeout=120
            ) as response:
                for line in response.iter_lines():
                    if line:
                        lines.append(line)
                        started.set()
        except httpx.HTTPError as exc:
            lines.append(f"error: {exc!r}")
        started.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_sigterm_lets_a_stream_in_flight_finish_refuses_new_requests_and_exits_0(
    tiny_model_dir, cli_env, tmp_path_factory
):
    log_path = tmp_path_factory.mktemp("sigterm") / "serve.log"
    proc, base = tiny_server(tiny_model_dir, cli_env, log_path, "--shutdown-timeout", "60")
    try:
        lines: list[str] = []
        started = threading.Event()
        # Two searches of 4 x 800 tokens a stage, every candidate sampled to its limit (NO_EOS): about
        # 11 s here, so the checks below run while it is still streaming.
        reasoning = {"beam_width": 4, "max_tokens_per_stage": 800}
        long_stream = chat_body(stream=True, reasoning=reasoning, n=2, max_tokens=None, **NO_EOS)
        stream = read_stream(base, long_stream, lines, started)
        # Its first chunk has arrived: the stream is in flight (the engine's load figures, polled
        # through /health, can miss a busy moment on a loaded machine).
        assert started.wait(30), lines
        assert stream.is_alive() and '"role":"assistant"' in lines[0].replace(" ", ""), f"no stream in flight: {lines}"
        proc.send_signal(signal.SIGTERM)
        # While the stream runs on: the health probe and new requests get 503.
        assert wait_for(lambda: httpx.get(f"{base}/health", timeout=5).status_code == 503, timeout=5)
        assert httpx.get(f"{base}/health", timeout=5).json()["status"] == "draining"
        refused = httpx.post(f"{base}/v1/chat/completions", json=chat_body(), headers=AUTH, timeout=10)
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "shutting_down"
        assert proc.poll() is None and lines[-1] != "data: [DONE]", "the stream ended before the checks"
        stream.join(timeout=120)
        assert lines[-1] == "data: [DONE]", lines[-3:]
        chunks = [json.loads(line[6:]) for line in lines[:-1]]
        assert not any("error" in chunk for chunk in chunks), chunks[-1]
        assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            kill_server(proc)
        print_log_tail(log_path)


@pytest.mark.asyncio(loop_scope="session")
async def test_what_outlives_the_shutdown_timeout_gets_503_plain_or_in_band(engine, image_url):
    """The drain itself, in process on the session engine (the signal's part is tested above)."""
    settings = replace(SMALL, shutdown_timeout_s=1.0)
    endless = endless_search(engine, image_url)
    async with small_server(engine, settings) as (app, base), httpx.AsyncClient(base_url=base, timeout=60) as client:
        lifecycle = app.state.llava_o1.lifecycle
        plain, stream = await plain_and_streamed_in_flight(client, lifecycle, endless)
        drained = time.monotonic()
        await lifecycle.drain()
        assert time.monotonic() - drained < 1.0 + STOPPING_GRACE_S + 0.5
        await assert_both_ended_with("shutting_down", plain, stream)
        await assert_no_engine_work_left(engine, "the cancelled searches left engine work running")


def endless_search(engine, image_url: str) -> dict:
    """A request for the session engine whose search outlasts any test (3000 tokens a stage, NO_EOS)."""
    return {**payload(image_url, beam_width=4, max_tokens_per_stage=3000), **NO_EOS, "model": engine.model_name}


async def plain_and_streamed_in_flight(client: httpx.AsyncClient, lifecycle, body: dict):
    """A plain and a streamed request of `body`, once both are in flight: their tasks."""
    plain = asyncio.create_task(client.post("/v1/chat/completions", json=body))
    stream = asyncio.create_task(client.post("/v1/chat/completions", json={**body, "stream": True}))
    while lifecycle.in_flight < 2:
        await asyncio.sleep(0.05)
    return plain, stream


async def assert_both_ended_with(code: str, plain: asyncio.Task, stream: asyncio.Task) -> None:
    """The plain request got a 503 with `code`; the stream got it in band, then [DONE]."""
    response = await plain
    assert response.status_code == 503 and response.json()["error"]["code"] == code
    streamed = await stream
    events = [line.removeprefix("data: ") for line in streamed.text.splitlines() if line.startswith("data: ")]
    assert streamed.status_code == 200 and events[-1] == "[DONE]"
    assert json.loads(events[-2])["error"]["code"] == code


async def assert_no_engine_work_left(engine, why: str) -> None:
    for _ in range(100):
        if engine.num_unfinished_requests() == 0:
            break
        await asyncio.sleep(0.05)
    assert engine.num_unfinished_requests() == 0, why


class _DeadWithoutTelling:
    """The session engine, except that its health check fails once `dead` is set, while its
    generation runs on: a vLLM front end that has noticed its engine core died but has not yet told
    the requests waiting on it (it cleans up the dead engine's processes first)."""

    def __init__(self, engine):
        self._engine = engine
        self.dead = False

    async def is_healthy(self) -> bool:
        return not self.dead and await self._engine.is_healthy()

    def __getattr__(self, name):
        return getattr(self._engine, name)


@pytest.mark.asyncio(loop_scope="session")
async def test_requests_in_flight_get_503_as_soon_as_the_engine_is_found_dead(engine, image_url):
    """The server ends requests in flight itself once its health watch finds the engine dead: it
    does not wait for the engine to fail them (that is what the subprocess test above sees)."""
    dying = _DeadWithoutTelling(engine)
    endless = endless_search(engine, image_url)
    async with small_server(dying, SMALL) as (app, base), httpx.AsyncClient(base_url=base, timeout=60) as client:
        plain, stream = await plain_and_streamed_in_flight(client, app.state.llava_o1.lifecycle, endless)
        await asyncio.sleep(0.5)
        dying.dead = True
        found_dead = time.monotonic()
        await asyncio.wait({plain, stream})
        # The watch polls every 0.5 s; the plain request looks every 0.25 s.
        assert time.monotonic() - found_dead < 2.0
        await assert_both_ended_with("engine_unavailable", plain, stream)
        refused = await client.post("/v1/chat/completions", json=endless)
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "engine_unavailable"
        await assert_no_engine_work_left(engine, "the ended searches left engine work running")


async def test_a_dead_hf_engine_loop_fails_its_calls_and_reports_unhealthy(tiny_mllama_dir):
    from models.hf_engine import HfEngine

    engine = HfEngine.from_pretrained(str(tiny_mllama_dir), model_name="tiny-mllama")
    try:
        prompt = engine.render(image_question("q"), "<SUMMARY>")
        settings = SamplingSettings(n=2, max_tokens=2000, ignore_eos=True, temperature=1.0)
        call = asyncio.create_task(engine.generate(prompt, settings, job_id="doomed"))
        await asyncio.sleep(0.5)
        assert not call.done(), "the generation ended before the fault"

        def fault(*args, **kwargs):
            raise RuntimeError("injected: the engine loop fails")

        engine._take_calls = fault  # type: ignore[method-assign]  # the loop's next turn raises
        with pytest.raises(EngineError):
            await asyncio.wait_for(call, timeout=5)
        assert not await engine.is_healthy()
        with pytest.raises(EngineError):
            await engine.generate(prompt, settings, job_id="after")
    finally:
        await engine.shutdown()
