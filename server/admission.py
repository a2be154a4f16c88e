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

    def check_capacity(self) -> None:
        """Refuse (429) when every slot is busy and the queue is full."""
        if self.active >= self.max_concurrent and self.queued >= self.max_queue:
            raise APIError(
                429,
                "the server is at capacity; retry later",
                code="server_overloaded",
                headers={"Retry-After": str(self.retry_after_s())},
            )

    def ticket(self) -> Ticket:
        """A place in the queue, taken now (or 429); `admitted()` later waits for the slot."""
        return Ticket(self)

    def slot(self) -> contextlib.AbstractAsyncContextManager[None]:
        """Hold a search slot for the duration of the block; wait in the queue or be refused (429)."""
        return Ticket(self).admitted()

    def _changed(self) -> None:
        self._on_change(self.active, self.queued)


class Ticket:
    """A request's place in the queue. Taken at once, so that a stream, which answers 200 before it
    waits for its slot, is refused (429) while it still can be; `cancel()` gives the place back if
    the slot is never waited for (idempotent, and a no-op once admitted)."""

    def __init__(self, controller: AdmissionController):
        controller.check_capacity()
        self._controller = controller
        self._queued = True
        controller.queued += 1
        controller._changed()

    def cancel(self) -> None:
        if self._queued:
            self._queued = False
            self._controller.queued -= 1
            self._controller._changed()

    @contextlib.asynccontextmanager
    async def admitted(self) -> AsyncIterator[None]:
        controller = self._controller
        if not self._queued:
            raise RuntimeError("this ticket was cancelled or used")
        try:
            await controller._slots.acquire()
        finally:
            self.cancel()
        controller.active += 1
        controller._changed()
        try:
            yield
        finally:
            controller.active -= 1
            controller._slots.release()
            controller._changed()
