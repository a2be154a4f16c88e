"""`llava-o1 serve`: start the engine, then the OpenAI-style HTTP API on it, until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Sequence

import uvicorn

from server.lifecycle import Lifecycle
from server.settings import ImageLimits, ServerSettings

log = logging.getLogger("llava_o1.serve")


def build_parser() -> argparse.ArgumentParser:
    from models.engine_config import add_engine_arguments, make_parser
    from server.search_flags import add_search_arguments

    parser = make_parser(
        "llava-o1 serve", "Serve a vision-language model with stage-level reasoning behind an OpenAI-style API."
    )
    defaults, images = ServerSettings(), ImageLimits()
    server = parser.add_argument_group("server")
    server.add_argument("--host", default=defaults.host, help=f"address to listen on (default {defaults.host})")
    server.add_argument("--port", type=int, default=defaults.port, help=f"port (default {defaults.port})")
    server.add_argument(
        "--api-key",
        default=os.environ.get("LLAVA_O1_API_KEY"),
        help="require this bearer token (default: $LLAVA_O1_API_KEY, else none)",
    )
    server.add_argument(
        "--metrics-require-api-key", action="store_true", help="protect /metrics with the API key too (default: open)"
    )
    server.add_argument(
        "--max-concurrent-searches",
        type=int,
        default=defaults.max_concurrent_searches,
        help="searches run at once; more wait in the queue",
    )
    server.add_argument(
        "--max-queue",
        type=int,
        default=defaults.max_queue,
        help="searches that may wait for a slot; beyond it requests get 429",
    )
    server.add_argument(
        "--request-timeout",
        type=float,
        default=defaults.request_timeout_s,
        help="seconds from arrival to the last byte before a request gets 504",
    )
    server.add_argument(
        "--engine-death-exit-after",
        type=float,
        default=defaults.engine_death_exit_s,
        help="seconds between the engine's death and the process exiting non-zero, for its supervisor",
    )
    server.add_argument(
        "--max-beam-width", type=int, default=defaults.max_beam_width, help="largest beam_width a request may ask for"
    )
    server.add_argument(
        "--max-n", type=int, default=defaults.max_n, help="the most choices (n) one request may ask for"
    )
    server.add_argument(
        "--sse-keepalive",
        type=float,
        default=defaults.sse_keepalive_s,
        help="seconds of silence in a stream before an SSE comment keeps proxies from cutting it",
    )
    server.add_argument(
        "--no-playground", dest="playground", action="store_false", help="do not serve the playground page at /"
    )
    server.add_argument(
        "--max-request-tokens",
        type=int,
        default=defaults.max_request_tokens,
        help="the most max_tokens and reasoning.max_tokens_per_stage a request may ask for (default: the context)",
    )
    server.add_argument("--max-body-bytes", type=int, default=defaults.max_body_bytes)
    server.add_argument("--max-images", type=int, default=images.max_images, help="images per request")
    server.add_argument("--max-image-pixels", type=int, default=images.max_pixels)
    server.add_argument("--allow-remote-images", action="store_true", help="accept http(s) image URLs")
    server.add_argument(
        "--allow-private-image-hosts",
        nargs="*",
        default=[],
        metavar="HOST[:PORT]",
        help="remote image hosts allowed to resolve to loopback/private addresses",
    )
    server.add_argument("--remote-image-max-bytes", type=int, default=images.remote_max_bytes)
    server.add_argument("--remote-image-timeout", type=float, default=images.remote_timeout_s, help="seconds")
    add_search_arguments(parser)
    # vLLM's parser owns --model; its default here is the embedded tiny model.
    add_engine_arguments(parser)
    # vLLM's own flag, for its engine core's drain; here it bounds the whole server's drain too.
    for action in parser._actions:
        if action.dest == "shutdown_timeout":
            action.default = defaults.shutdown_timeout_s
            action.help = "on SIGTERM or SIGINT, seconds that requests in flight may run on before they are cancelled"
    return parser


def settings_from(args: argparse.Namespace) -> ServerSettings:
    from server.default_model import use_default_model
    from server.search_flags import search_config_from

    use_default_model(args)  # first: the search's swires cutoff may be the default verifier's
    search = search_config_from(args)
    if not 1 <= search.beam_width <= args.max_beam_width:
        raise SystemExit(f"llava-o1 serve: --beam-width must be between 1 and --max-beam-width ({args.max_beam_width})")
    return ServerSettings(
        host=args.host,
        port=args.port,
        api_key=args.api_key or None,
        search=search,
        max_beam_width=args.max_beam_width,
        max_n=args.max_n,
        sse_keepalive_s=args.sse_keepalive,
        playground=args.playground,
        max_request_tokens=args.max_request_tokens,
        max_body_bytes=args.max_body_bytes,
        metrics_require_api_key=args.metrics_require_api_key,
        max_concurrent_searches=args.max_concurrent_searches,
        max_queue=args.max_queue,
        request_timeout_s=args.request_timeout,
        shutdown_timeout_s=args.shutdown_timeout,
        engine_death_exit_s=args.engine_death_exit_after,
        images=ImageLimits(
            max_images=args.max_images,
            max_pixels=args.max_image_pixels,
            allow_remote=args.allow_remote_images,
            private_hosts_allowed=tuple(args.allow_private_image_hosts),
            remote_max_bytes=args.remote_image_max_bytes,
            remote_timeout_s=args.remote_image_timeout,
        ),
    )


def serve(argv: Sequence[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # httpx logs every request at INFO: a remote engine's 28 per search would drown the log.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    args = build_parser().parse_args(list(argv))
    settings = settings_from(args)
    return asyncio.run(_serve(settings, args))


class GracefulServer(uvicorn.Server):
    """SIGTERM/SIGINT start a drain (server/lifecycle.py) instead of uvicorn's immediate stop; a
    second signal stops at once. uvicorn also re-raises the signal after its own shutdown, which
    would end the process before the engine is shut down; here it does not."""

    def __init__(self, config: uvicorn.Config, lifecycle: Lifecycle):
        super().__init__(config)
        self.lifecycle = lifecycle
        lifecycle.stop = self.stop
        self._drain: asyncio.Task | None = None

    def stop(self) -> None:
        self.should_exit = True

    def handle_exit(self, sig: int, frame) -> None:
        if self._drain is not None or self.should_exit:
            log.info("second signal: stopping now")
            super().handle_exit(sig, frame)
            return
        log.info("received %s: draining", signal.Signals(sig).name)
        self._drain = asyncio.get_running_loop().create_task(self.lifecycle.drain())

    @contextlib.contextmanager
    def capture_signals(self):
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.handle_exit, sig, None)
        try:
            yield
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)


async def _serve(settings: ServerSettings, args: argparse.Namespace) -> int:
    """Serve until drained or the engine dies; the process's exit code. `args` has been through
    `settings_from`, which filled in the default model."""

    from models.engine_factory import start_engine
    from server.app import create_app, get_lifecycle

    engine = start_engine(args)
    try:
        app = create_app(engine, settings)
        # The drain has already waited for requests in flight; what is left after it is cancelled.
        config = uvicorn.Config(
            app, host=settings.host, port=settings.port, log_level="info", timeout_graceful_shutdown=2
        )
        log.info("serving model %s on http://%s:%d/v1", engine.model_name, settings.host, settings.port)
        lifecycle = get_lifecycle(app)
        await GracefulServer(config, lifecycle).serve()
        return lifecycle.exit_code
    finally:
        log.info("shutting down the engine")
        await engine.shutdown()
