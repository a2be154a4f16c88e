"""POST with backoff: statuses that mean "later" (a busy server's 429, an overloaded one's 5xx) are
retried after the server's Retry-After or an exponential delay, a bounded number of times. Shared
by the clients this project ships (run-batch, annotate), so that they back off alike."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx

FIRST_DELAY_S = 0.5
MOST_DELAY_S = 30.0


def later(status: int) -> bool:
    """Statuses that mean "try again later": rate limited, or the server in trouble."""
    return status == 429 or status >= 500


def retry_after_s(response: httpx.Response) -> float | None:
    """The server's Retry-After in seconds (the date form is not used by the servers we talk to)."""
    try:
        return max(0.0, float(response.headers.get("retry-after", "")))
    except ValueError:
        return None


async def post_with_backoff(
    client: httpx.AsyncClient,
    url: str,
    body: dict[str, Any],
    *,
    retried: Callable[[int], bool],
    retries: int,
    transport_errors: bool = False,
    first_delay_s: float = FIRST_DELAY_S,
) -> httpx.Response:
    """POST `body`; a status `retried` accepts is tried again, up to `retries` more times, and so are
    timeouts and refused connections when `transport_errors`. The last answer (or error) stands."""
    delay = first_delay_s
    for attempt in range(retries + 1):
        last = attempt == retries
        try:
            response = await client.post(url, json=body)
        except httpx.TransportError:
            if not transport_errors or last:
                raise
            wait = delay
        else:
            if not retried(response.status_code) or last:
                return response
            wait = retry_after_s(response) or delay
        await asyncio.sleep(min(wait, MOST_DELAY_S))
        delay = min(delay * 2, MOST_DELAY_S)
    raise AssertionError("unreachable")
