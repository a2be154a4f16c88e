"""ASGI middleware that counts chat completion requests: in flight, outcome, end-to-end latency.

It sees every request, including those refused before the route runs (bad JSON, auth), and a
streamed response only ends when its last chunk is sent. The route tells it the strategy and,
for streams, an outcome the status code cannot show (an in-band error, a client that left),
through the request's state.
"""

from __future__ import annotations

import time

from server.metrics import ServerMetrics, outcome_of

CHAT_PATH = "/v1/chat/completions"


class ChatMetricsMiddleware:
    def __init__(self, app, metrics: ServerMetrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] != CHAT_PATH or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        state = scope.setdefault("state", {})
        state["started"] = started = time.perf_counter()
        status = 500

        async def capture_status(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, capture_status)
        except BaseException:
            state.setdefault("outcome", "cancelled")
            raise
        finally:
            self.metrics.in_flight.dec()
            outcome = state.get("outcome") or outcome_of(status)
            self.metrics.record_request(state.get("strategy", "unknown"), outcome, time.perf_counter() - started)
