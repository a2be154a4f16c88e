"""`llava-o1 serve`: start the engine for a model and keep it serving until stopped.

The HTTP API (OpenAI-style chat completions) arrives with its own issue; until then `serve`
starts the engine, proves it answers with one warm-up request, says so, and runs until
SIGINT/SIGTERM, then shuts the engine down cleanly.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
from collections.abc import Sequence
from dataclasses import dataclass

log = logging.getLogger("llava_o1.serve")


@dataclass(frozen=True)
class ServeConfig:
    """The server's own settings (engine settings are vLLM's AsyncEngineArgs)."""

    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None


def build_parser() -> argparse.ArgumentParser:
    from models.engine_config import add_engine_arguments, make_parser

    parser = make_parser("llava-o1 serve")
    parser.description = "Serve a vision-language model with stage-level reasoning."
    # vLLM's parser owns --model; its default here is the embedded tiny model.
    add_engine_arguments(parser)
    server = parser.add_argument_group("server")
    server.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    server.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000)")
    server.add_argument("--api-key", default=os.environ.get("LLAVA_O1_API_KEY"),
                        help="require this bearer token (default: $LLAVA_O1_API_KEY, else none)")
    return parser


def serve(argv: Sequence[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(list(argv))
    config = ServeConfig(host=args.host, port=args.port, api_key=args.api_key)
    asyncio.run(_serve_engine(config, args))
    return 0


async def _serve_engine(config: ServeConfig, args: argparse.Namespace) -> None:
    from models.engine import ChatMessage, SamplingSettings
    from models.engine_factory import start_engine

    engine = start_engine(args)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        prompt = engine.render([ChatMessage("user", "Hello")])
        await engine.generate(prompt, SamplingSettings(max_tokens=4), job_id="warmup")
        log.info("engine ready: model %s, context %d tokens", engine.model_name, engine.max_model_len)
        log.info("the HTTP API is not part of this build yet; only the engine runs "
                 "(would listen on %s:%d). Ctrl-C stops it.", config.host, config.port)
        await stop.wait()
    finally:
        log.info("shutting down the engine")
        await engine.shutdown()
