"""Entry points of the search: run a question to a result, or stream its events as it goes."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncGenerator, Sequence

from models.engine import ChatMessage, Engine
from stage_search.config import SearchConfig
from stage_search.events import SearchEvent, SearchFinished
from stage_search.search_job import Emit, SearchJob
from stage_search.strategies import STRATEGIES
from stage_search.trace import SearchResult


def new_job_id() -> str:
    return f"search-{uuid.uuid4().hex[:16]}"


async def run_search(
    engine: Engine,
    messages: Sequence[ChatMessage],
    config: SearchConfig,
    *,
    job_id: str | None = None,
    on_event: Emit | None = None,
) -> SearchResult:
    """Search one question. If the caller is cancelled, all engine work of the job is aborted."""
    job = SearchJob(engine, messages, config, job_id=job_id or new_job_id(), emit=on_event)
    # Beam width 1 is one sample whatever the strategy: nothing to judge.
    strategy = STRATEGIES["none" if config.beam_width == 1 else config.strategy]
    try:
        result = await strategy(job)
    except BaseException:
        await asyncio.shield(engine.abort(job.job_id))
        raise
    job.emit(SearchFinished(result))
    return result


async def stream_search(
    engine: Engine, messages: Sequence[ChatMessage], config: SearchConfig, *, job_id: str | None = None
) -> AsyncGenerator[SearchEvent, None]:
    """Yield events as the search makes them, ending with SearchFinished.

    Closing the iterator early (a client went away) cancels the search and aborts its engine work.
    """
    queue: asyncio.Queue[SearchEvent] = asyncio.Queue()
    task = asyncio.create_task(run_search(engine, messages, config, job_id=job_id, on_event=queue.put_nowait))
    getter: asyncio.Future | None = None
    try:
        while True:
            getter = asyncio.ensure_future(queue.get())
            await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
            if getter.done():
                event = getter.result()
            else:
                getter.cancel()
                if queue.empty():
                    task.result()  # the search ended without finishing: raise its error here
                    raise RuntimeError("the search ended without a result")
                event = queue.get_nowait()
            yield event
            if isinstance(event, SearchFinished):
                return
    finally:
        if getter is not None and not getter.done():
            getter.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
