"""The server's life after start-up: draining on SIGTERM, and exiting when the engine dies.

- Drain (SIGTERM or SIGINT): new requests and /health get 503, so load balancers stop sending;
  requests in flight run on, up to the shutdown timeout; those still running then get 503 (in band
  on a stream) and their searches are cancelled, which aborts their engine work; then the HTTP
  server stops and the process exits 0.
- Engine outage (a remote engine, `Engine.outlives_engine_outages`): refused with 503 while it
  does not answer, served again once it does; requests in flight fail on their own connections.
- Engine death: a watch polls the engine's health; once it fails, every request gets 503, those in
  flight too (we end them ourselves: vLLM tells its waiting requests only after cleaning up the
  dead engine's processes, which on a loaded machine can outlast the exit below), and after
  `engine_death_exit_s` the process exits non-zero so that its supervisor (compose `restart:`, a
  Kubernetes liveness probe, systemd) starts a new one.
  A dead vLLM engine core cannot be restarted inside the process cleanly (its processes, shared
  memory and the front end's request state go with it), so we exit rather than restart.

`LifecycleGate` is the ASGI side: it refuses new requests while draining or dead and counts the
requests in flight that a drain waits for.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from models.engine import Engine, EngineError
from server.errors import ServerShuttingDown, send_error

T = TypeVar("T")

log = logging.getLogger("llava_o1.server")

# Served while draining or dead: the probes (they say why), and metrics (ops watch the drain).
PASS_THROUGH = ("/health", "/live", "/metrics")
ENGINE_DEATH_EXIT_CODE = 3
# After the shutdown timeout: how long the requests told to stop get to send their 503.
STOPPING_GRACE_S = 2.0


@dataclass
class Lifecycle:
    shutdown_timeout_s: float = 30.0
    engine_death_exit_s: float = 3.0
    health_poll_s: float = 0.5
    draining: bool = False
    engine_dead: bool = False
    engine_down: bool = False  # a remote engine that is not answering (for now)
    in_flight: int = 0  # HTTP requests being served (not health or metrics)
    exit_code: int = 0
    # Ends the HTTP server; `serve` sets it. Without one (an app in a test) nothing stops.
    stop: Callable[[], None] = field(default=lambda: None)
    _idle: asyncio.Event | None = None
    # Set when requests in flight must end now; each raises its own `_interruption()`.
    _interrupted: asyncio.Event = field(default_factory=asyncio.Event)
    _interruption: Callable[[], Exception] | None = None

    @property
    def interruption(self) -> Exception | None:
        """What a request still in flight must end with now (the shutdown timeout passed, or the
        engine died), or None while it may run on."""
        return None if self._interruption is None else self._interruption()

    def _interrupt(self, error: Callable[[], Exception]) -> None:
        if self._interruption is None:
            self._interruption = error
            self._interrupted.set()

    @property
    def refusing(self) -> str | None:
        """Why new requests are refused, or None while serving."""
        if self.engine_dead:
            return "engine_dead"
        if self.engine_down:
            return "engine_down"
        return "draining" if self.draining else None

    async def drain(self) -> None:
        """Refuse new requests, let those in flight finish (up to the timeout), then stop."""
        self.draining = True
        log.info("draining: %d request(s) in flight, waiting up to %g s", self.in_flight, self.shutdown_timeout_s)
        try:
            await asyncio.wait_for(self._until_idle(), self.shutdown_timeout_s)
            log.info("drained; stopping")
        except TimeoutError:
            log.warning("shutdown timeout: %d request(s) still in flight are cancelled", self.in_flight)
            self._interrupt(ServerShuttingDown)
            try:
                await asyncio.wait_for(self._until_idle(), STOPPING_GRACE_S)
            except TimeoutError:
                pass  # the HTTP server cancels what is left
        self.stop()

    async def until_interrupted(self, events: AsyncGenerator[T, None]) -> AsyncGenerator[T, None]:
        """`events` as they come, until requests in flight are interrupted: then the interruption
        is raised. However it ends (that, the client leaving, an error), `events` is closed, which
        cancels the search behind them and aborts its engine work."""
        interrupted = asyncio.ensure_future(self._interrupted.wait())
        following: asyncio.Future[T] | None = None
        try:
            while True:
                following = asyncio.ensure_future(anext(events))
                await asyncio.wait({following, interrupted}, return_when=asyncio.FIRST_COMPLETED)
                error = self.interruption
                if not following.done() and error is not None:
                    raise error
                try:
                    event = following.result()
                except StopAsyncIteration:
                    return
                yield event
        finally:
            interrupted.cancel()
            # The wait for the next event runs in a task of its own: a cancelled caller must stop it.
            if following is not None and not following.done():
                following.cancel()
                await asyncio.gather(following, return_exceptions=True)
            await events.aclose()

    async def watch_engine(self, engine: Engine) -> None:
        """Poll the engine's health; once it fails, refuse everything and exit non-zero soon after.
        An engine elsewhere (a remote server) is waited for instead: refused while it is down, served
        again once it answers; exiting would not bring it back."""
        while await engine.is_healthy():
            await asyncio.sleep(self.health_poll_s)
        while engine.outlives_engine_outages:
            self.engine_down = True
            log.error("the engine is unreachable; refusing requests until it answers")
            while not await engine.is_healthy():
                await asyncio.sleep(self.health_poll_s)
            self.engine_down = False
            log.info("the engine answers again; serving")
            while await engine.is_healthy():
                await asyncio.sleep(self.health_poll_s)
        self.engine_dead = True
        self._interrupt(lambda: EngineError("the engine died"))
        log.error(
            "the engine died; refusing requests and exiting with code %d in %g s",
            ENGINE_DEATH_EXIT_CODE,
            self.engine_death_exit_s,
        )
        await asyncio.sleep(self.engine_death_exit_s)
        self.exit_code = ENGINE_DEATH_EXIT_CODE
        self.stop()

    def enter(self) -> None:
        self.in_flight += 1

    def leave(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0 and self._idle is not None:
            self._idle.set()

    async def _until_idle(self) -> None:
        while self.in_flight:
            self._idle = asyncio.Event()
            await self._idle.wait()


_REFUSALS = {
    "draining": ("the server is shutting down; retry on another replica", "shutting_down"),
    "engine_dead": ("the engine is unavailable; the server is restarting", "engine_unavailable"),
    "engine_down": ("the engine is unreachable; retry later or on another replica", "engine_unavailable"),
}


class LifecycleGate:
    """ASGI middleware: 503 for new requests while draining or after the engine died; counts the rest."""

    def __init__(self, app, lifecycle: Lifecycle):
        self.app = app
        self.lifecycle = lifecycle

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] in PASS_THROUGH:
            return await self.app(scope, receive, send)
        refusing = self.lifecycle.refusing
        if refusing is not None:
            message, code = _REFUSALS[refusing]
            # Closing the connection moves a keep-alive client on to another replica.
            await send_error(send, 503, message, code, ((b"retry-after", b"1"), (b"connection", b"close")))
            return
        self.lifecycle.enter()
        try:
            await self.app(scope, receive, send)
        finally:
            self.lifecycle.leave()
