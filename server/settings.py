"""The HTTP server's settings: one typed object, built from `llava-o1 serve` flags."""

from __future__ import annotations

from dataclasses import dataclass, field

from stage_search.config import SearchConfig


@dataclass(frozen=True)
class ImageLimits:
    max_images: int = 4  # per request
    max_pixels: int = 4096 * 4096  # width x height; larger (or a decompression bomb) is refused
    allow_remote: bool = False  # http(s) image URLs at all
    # host or host:port that may resolve to loopback/private/link-local addresses (default: none)
    private_hosts_allowed: tuple[str, ...] = ()
    remote_max_bytes: int = 10 * 1024 * 1024
    remote_timeout_s: float = 10.0


@dataclass(frozen=True)
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    search: SearchConfig = field(default_factory=SearchConfig)  # defaults a request may override
    max_beam_width: int = 8
    max_n: int = 8  # the most choices (independent searches) one request may ask for
    # The most `max_tokens` and `reasoning.max_tokens_per_stage` a request may ask for; None: the
    # model's context length (the app fills it in from the engine).
    max_request_tokens: int | None = None
    max_body_bytes: int = 32 * 1024 * 1024
    metrics_require_api_key: bool = False  # open by default, as most exporters are
    max_concurrent_searches: int = 16
    max_queue: int = 64  # searches waiting for a slot; beyond it, 429
    request_timeout_s: float = 600.0  # from arrival (queueing included) to the last byte; then 504
    images: ImageLimits = field(default_factory=ImageLimits)
    # SIGTERM: how long requests in flight may run on before they are cancelled.
    shutdown_timeout_s: float = 30.0
    # After the engine dies: how long before the process exits non-zero (for its supervisor).
    engine_death_exit_s: float = 3.0
    # A stream idle this long gets an SSE comment, so proxies do not cut it during a long stage.
    sse_keepalive_s: float = 10.0
    playground: bool = True  # the page at /
