"""The bench's `remote` mode: our server with `--engine remote`, on vLLM's own OpenAI server that the
bench starts here on the same model, so that `ours` (the engine in process) and `remote` differ
only in the engine's place: behind an HTTP hop, with the messages (not the rendered prompt) and the
image by reference crossing it.

The vLLM server gets the in-process engine's settings where they matter for speed: the same dtype,
KV cache size and block size on CPU, priority scheduling (our default), prefix caching (vLLM's).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from models.engine_config import CPU_BLOCK_SIZE, CPU_KV_CACHE_BYTES, cpu_has_native_bf16, has_gpu

START_TIMEOUT_S = 600


def vllm_server_command(args: argparse.Namespace, port: int) -> list[str]:
    served = args.served_model_name[0] if args.served_model_name else args.model
    command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", args.model]
    command += ["--served-model-name", served, "--host", "127.0.0.1", "--port", str(port)]
    command += ["--scheduling-policy", "priority", "--enable-prompt-tokens-details"]
    if args.max_model_len:
        command += ["--max-model-len", str(args.max_model_len)]
    if not has_gpu():
        dtype = args.dtype if args.dtype != "auto" else ("bfloat16" if cpu_has_native_bf16() else "float32")
        command += ["--dtype", dtype, "--block-size", str(args.block_size or CPU_BLOCK_SIZE)]
    return command


@contextlib.contextmanager
def vllm_server(args: argparse.Namespace) -> Iterator[str]:
    """vLLM's OpenAI server on `args.model`, as a subprocess on loopback; its base URL."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = dict(os.environ)
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", str(CPU_KV_CACHE_BYTES >> 30))
    log_path = Path(tempfile.mkdtemp(prefix="llava-o1-bench-")) / "vllm-server.log"
    print(f"starting vLLM's OpenAI server for the remote mode (log: {log_path}) ...", file=sys.stderr)
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            vllm_server_command(args, port), env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _answers(f"{base}/v1/models"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("llava-o1 bench: vLLM's server did not start:\n" + log_path.read_text()[-3000:])
            time.sleep(1.0)
        yield base
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 9)
        proc.wait(timeout=30)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
