"""Server-sent events framing: one `data:` line per event, as OpenAI's streaming API sends them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator
from typing import TypeVar

from pydantic import BaseModel

T = TypeVar("T")


def sse_event(payload: BaseModel | str) -> str:
    """One SSE event carrying a wire object as JSON, or a bare string such as [DONE]."""
    data = payload if isinstance(payload, str) else payload.model_dump_json()
    return f"data: {data}\n\n"


SSE_DONE = sse_event("[DONE]")

# A comment line: clients ignore it, proxies see traffic on a stream that is thinking.
SSE_KEEPALIVE = ": keep-alive\n\n"


async def with_keepalives(items: AsyncIterator[T], interval_s: float) -> AsyncGenerator[T | None, None]:
    """`items` as they come, and None whenever `interval_s` passes without one (time for a
    keep-alive). The caller closes `items`; a wait cut short here is cancelled."""
    following: asyncio.Future[T] | None = None
    try:
        while True:
            following = asyncio.ensure_future(anext(items))
            while not (await asyncio.wait({following}, timeout=interval_s))[0]:
                yield None
            try:
                item = following.result()
            except StopAsyncIteration:
                return
            yield item
    finally:
        if following is not None and not following.done():
            following.cancel()
            await asyncio.gather(following, return_exceptions=True)
