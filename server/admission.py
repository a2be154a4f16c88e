"""Admission control: at most N searches at once, a bounded queue behind them, 429 beyond that.

Also the load-adaptive beam width: a request asking for beam_width "auto" gets the server's
maximum when nothing is queued and less as the queue fills (never below 1).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator, Callable

from server.errors import APIError


class AdmissionController:
    def __init__(self, max_concurrent: int, max_queue: int, on_change: Callable[[int, int], None] | None = None):
        if max_concurrent < 1 or max_queue < 0:
            raise ValueError("max_concurrent must be >= 1 and max_queue >= 0")
        self.max_concurrent = max_concurrent
        self.max_queue = max_queue
        self.active = 0
        self.queued = 0
        self._slots = asyncio.Semaphore(max_concurrent)
        self._on_change = on_change or (lambda active, queued: None)

    def auto_beam_width(self, max_beam_width: int) -> int:
        """max_beam_width with an empty queue, shrinking linearly to 1 as the queue fills."""
        if self.max_queue == 0:
            return max_beam_width
        pressure = min(self.queued / self.max_queue, 1.0)
        return max(1, math.floor(max_beam_width * (1.0 - pressure) + 0.5))

    def retry_after_s(self) -> int:
        return max(1, self.queued // self.max_concurrent + 1)

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold a search slot for the duration of the block; wait in the queue or be refused (429)."""
        if self.active >= self.max_concurrent and self.queued >= self.max_queue:
            raise APIError(
                429,
                "the server is at capacity; retry later",
                code="server_overloaded",
                headers={"Retry-After": str(self.retry_after_s())},
            )
        self.queued += 1
        self._changed()
        try:
            await self._slots.acquire()
        finally:
            self.queued -= 1
            self._changed()
        self.active += 1
        self._changed()
        try:
            yield
        finally:
            self.active -= 1
            self._slots.release()
            self._changed()

    def _changed(self) -> None:
        self._on_change(self.active, self.queued)
