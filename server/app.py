"""The FastAPI application, built by a factory so tests and `serve` make it the same way."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import replace

from fastapi import FastAPI

from models.engine import Engine
from server.admission import AdmissionController
from server.body_limit import BodySizeLimit
from server.chat_route import router as chat_router
from server.errors import install_error_handlers
from server.lifecycle import Lifecycle, LifecycleGate
from server.meta_routes import package_version
from server.meta_routes import router as meta_router
from server.metrics import ServerMetrics
from server.metrics_middleware import ChatMetricsMiddleware
from server.metrics_route import router as metrics_router
from server.openapi import publish_limits
from server.playground import router as playground_router
from server.settings import ServerSettings
from server.state import ServerState


def create_app(engine: Engine, settings: ServerSettings | None = None) -> FastAPI:
    """An app serving `engine` (already started; its lifetime is the caller's)."""
    settings = settings or ServerSettings()
    if settings.max_request_tokens is None:
        settings = replace(settings, max_request_tokens=engine.max_model_len)
    lifecycle = Lifecycle(
        shutdown_timeout_s=settings.shutdown_timeout_s, engine_death_exit_s=settings.engine_death_exit_s
    )

    @contextlib.asynccontextmanager
    async def watching_the_engine(app: FastAPI):
        watch = asyncio.create_task(lifecycle.watch_engine(engine))
        yield
        watch.cancel()

    app = FastAPI(
        title="llava-o1",
        version=package_version("llava-o1") or "0",
        description="OpenAI-style chat completions with stage-level reasoning search.",
        lifespan=watching_the_engine,
    )
    metrics = ServerMetrics(engine)
    admission = AdmissionController(
        settings.max_concurrent_searches,
        settings.max_queue,
        on_change=lambda active, queued: metrics.queued.set(queued),
    )
    app.state.llava_o1 = ServerState(
        engine=engine,
        settings=settings,
        metrics=metrics,
        admission=admission,
        started=time.time(),
        lifecycle=lifecycle,
    )
    publish_limits(app, settings, app.state.llava_o1.model_names)
    install_error_handlers(app)
    app.include_router(chat_router)
    app.include_router(meta_router)
    app.include_router(metrics_router)
    if settings.playground:
        app.include_router(playground_router)
    # Added last = outermost: requests refused for their size, or while draining, are counted too.
    app.add_middleware(LifecycleGate, lifecycle=lifecycle)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(ChatMetricsMiddleware, metrics=metrics)
    return app


def get_lifecycle(app: FastAPI) -> Lifecycle:
    return app.state.llava_o1.lifecycle
