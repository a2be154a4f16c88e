"""Shared fixtures: one tiny model and one real vLLM-CPU engine for the whole test session."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import pytest_asyncio
from helpers import API_KEY, GUARDED_LIMITS, MODEL, TEST_ENGINE_OVERRIDES, kill_server, launch_server, shapes_image


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    from training.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny")


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def engine(tiny_model_dir):
    from models.engine_config import engine_args_for
    from models.vllm_engine import VllmEngine

    vllm_engine = VllmEngine.from_engine_args(engine_args_for(str(tiny_model_dir), **TEST_ENGINE_OVERRIDES))
    yield vllm_engine
    await vllm_engine.shutdown()


@pytest.fixture(scope="session")
def tiny_mllama_dir(tmp_path_factory) -> Path:
    from training.tiny_mllama import build_tiny_mllama

    return build_tiny_mllama(tmp_path_factory.mktemp("models") / "tiny-mllama")


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def hf_engine(tiny_mllama_dir):
    """The transformers engine on the tiny Mllama (the paper's architecture, which vLLM lacks)."""
    from models.hf_engine import HfEngine

    hf = HfEngine.from_pretrained(str(tiny_mllama_dir), model_name="tiny-mllama")
    yield hf
    await hf.shutdown()


@pytest.fixture(scope="session")
def vllm_server(tiny_model_dir, cli_env, tmp_path_factory):
    """vLLM's own OpenAI server on the tiny model, as a subprocess on loopback: the remote engine's
    other end. Our seed-bug plugin loads in it too (it is installed in the same environment)."""
    from helpers import kill_server, launch_vllm_server

    proc, base = launch_vllm_server(tiny_model_dir, cli_env, tmp_path_factory.mktemp("vllm-server") / "vllm.log")
    yield base
    kill_server(proc)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def remote_engine(vllm_server):
    """The remote engine (`--engine remote`) on that server."""
    from models.remote_engine import RemoteEngine

    engine = RemoteEngine.connect(vllm_server, send_priority=True)
    yield engine
    await engine.shutdown()


ENGINE_FIXTURES = {"vllm": "engine", "hf": "hf_engine", "remote": "remote_engine"}


@pytest.fixture(params=list(ENGINE_FIXTURES), scope="session")
def any_engine(request):
    """Each engine in turn: the contract and the search must hold on all of them."""
    return request.getfixturevalue(ENGINE_FIXTURES[request.param])


@pytest.fixture(scope="session")
def image_url() -> str:
    """The shapes image as a data: URL, as clients send it."""
    import base64
    import io

    buffer = io.BytesIO()
    shapes_image().save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


@pytest.fixture(scope="session")
def cli_env(tmp_path_factory) -> dict[str, str]:
    """Environment for CLI subprocesses: a private model cache, the venv's scripts first on PATH."""
    env = dict(os.environ)
    env["LLAVA_O1_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return env


@pytest.fixture(scope="session")
def image_host():
    """A loopback HTTP server with images for the remote-image tests: ok, too big, too slow."""
    import http.server
    import io
    import threading
    import time

    buffer = io.BytesIO()
    shapes_image().save(buffer, format="PNG")
    files = {"/shapes.png": buffer.getvalue(), "/big.png": b"\0" * 300_000}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path == "/slow.png":
                time.sleep(4)
            body = files.get(self.path, files["/shapes.png"] if self.path == "/slow.png" else None)
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


@pytest.fixture(scope="session")
def server(cli_env, image_host, tiny_model_dir, tmp_path_factory):
    """`llava-o1 serve` as a real subprocess on loopback with the random tiny model (its stages run to
    the token limit, so tests can count tokens and judge matches)."""
    args = [
        "--model",
        str(tiny_model_dir),
        "--served-model-name",
        MODEL,
        "--api-key",
        API_KEY,
        "--max-tokens-per-stage",
        "16",
        "--max-beam-width",
        "6",
        "--max-images",
        "2",
        "--max-image-pixels",
        "1000000",
        "--max-body-bytes",
        "2000000",
        "--allow-remote-images",
        "--allow-private-image-hosts",
        image_host,
        "--remote-image-max-bytes",
        "100000",
        "--remote-image-timeout",
        "1.5",
        "--max-model-len",
        "4096",
        # swires retraces exactly once: no random candidate's score passes a cutoff of 30.
        "--swires-cutoff",
        "30",
        "--swires-max-retraces",
        "1",
    ]
    yield from serve_subprocess(args, cli_env, tmp_path_factory.mktemp("server") / "serve.log")


@pytest.fixture(scope="session")
def guarded_server(cli_env, tiny_model_dir, tmp_path_factory):
    """`llava-o1 serve` on the random tiny model with GUARDED_LIMITS, as a real subprocess."""
    args = ["--model", str(tiny_model_dir), "--served-model-name", MODEL, "--api-key", API_KEY]
    args += ["--max-model-len", "4096", "--max-tokens-per-stage", "16", "--max-images", "2"]
    args += ["--max-image-pixels", "1000000", "--max-body-bytes", "2000000", "--request-timeout", "120"]
    for name, value in GUARDED_LIMITS.items():
        args += ["--" + name.replace("_", "-"), str(value)]
    yield from serve_subprocess(args, cli_env, tmp_path_factory.mktemp("guarded-server") / "serve.log")


@pytest.fixture(scope="session")
def hf_server(cli_env, tiny_mllama_dir, tmp_path_factory):
    """`llava-o1 serve --engine hf` on the tiny Mllama, as a real subprocess on loopback."""
    args = [
        "--model",
        str(tiny_mllama_dir),
        "--served-model-name",
        "tiny-mllama",
        "--engine",
        "hf",
        "--api-key",
        API_KEY,
        "--max-tokens-per-stage",
        "12",
    ]
    yield from serve_subprocess(args, cli_env, tmp_path_factory.mktemp("hf-server") / "serve.log")


@pytest.fixture(scope="session")
def demo_server(cli_env, tmp_path_factory):
    """`llava-o1 serve` on its default, the committed demo model (it answers the synthetic shapes
    questions in four stages it closes itself, mostly right), as a real subprocess on loopback."""
    yield from serve_subprocess(["--api-key", API_KEY], cli_env, tmp_path_factory.mktemp("demo-server") / "serve.log")


def serve_subprocess(args: list[str], env: dict[str, str], log_path: Path):
    """Start `llava-o1 serve ARGS` on a free port, wait until healthy, yield its details, stop it
    with SIGINT and check it exits cleanly."""
    import signal
    import subprocess

    proc, base = launch_server(args, env, log_path)
    yield {"base": base, "port": int(base.rsplit(":", 1)[1]), "log": log_path, "process": proc}
    proc.send_signal(signal.SIGINT)
    try:
        code = proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        kill_server(proc)
        raise
    assert code == 0, "server did not stop cleanly:\n" + log_path.read_text()[-3000:]
