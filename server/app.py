"""The FastAPI application, built by a factory so tests and `serve` make it the same way."""

from __future__ import annotations

import time

from fastapi import FastAPI

from models.engine import Engine
from server.admission import AdmissionController
from server.body_limit import BodySizeLimit
from server.chat_route import router as chat_router
from server.errors import install_error_handlers
from server.meta_routes import package_version
from server.meta_routes import router as meta_router
from server.metrics import ServerMetrics
from server.metrics_middleware import ChatMetricsMiddleware
from server.metrics_route import router as metrics_router
from server.settings import ServerSettings
from server.state import ServerState


def create_app(engine: Engine, settings: ServerSettings | None = None) -> FastAPI:
    """An app serving `engine` (already started; its lifetime is the caller's)."""
    settings = settings or ServerSettings()
    app = FastAPI(
        title="llava-o1",
        version=package_version("llava-o1") or "0",
        description="OpenAI-style chat completions with stage-level reasoning search.",
    )
    metrics = ServerMetrics(engine)
    admission = AdmissionController(
        settings.max_concurrent_searches,
        settings.max_queue,
        on_change=lambda active, queued: metrics.queued.set(queued),
    )
    app.state.llava_o1 = ServerState(
        engine=engine, settings=settings, metrics=metrics, admission=admission, started=time.time()
    )
    install_error_handlers(app)
    app.include_router(chat_router)
    app.include_router(meta_router)
    app.include_router(metrics_router)
    # Added last = outermost: requests refused for their size are counted too.
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(ChatMetricsMiddleware, metrics=metrics)
    return app
