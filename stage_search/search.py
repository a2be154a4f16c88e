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
    searches = stream_searches(engine, messages, [config], [job_id or new_job_id()])
    async with contextlib.aclosing(searches):
        async for _, event in searches:
            yield event


async def stream_searches(
    engine: Engine, messages: Sequence[ChatMessage], configs: Sequence[SearchConfig], job_ids: Sequence[str]
) -> AsyncGenerator[tuple[int, SearchEvent], None]:
    """Several searches of one question at once (a request's n choices): their events as they are
    made, each with its search's index, until every search has sent SearchFinished. One search's
    error ends them all. Closing the iterator early cancels every search and aborts its engine work."""
    queue: asyncio.Queue[tuple[int, SearchEvent]] = asyncio.Queue()

    def emitter(index: int) -> Emit:
        return lambda event: queue.put_nowait((index, event))

    tasks = [
        asyncio.create_task(run_search(engine, messages, config, job_id=job_id, on_event=emitter(i)))
        for i, (config, job_id) in enumerate(zip(configs, job_ids, strict=True))
    ]
    running = set(tasks)
    finished = 0
    getter: asyncio.Future | None = None
    try:
        while finished < len(tasks):
            if queue.empty():
                getter = asyncio.ensure_future(queue.get())
                done, _ = await asyncio.wait({getter, *running}, return_when=asyncio.FIRST_COMPLETED)
                for task in done & running:
                    running.discard(task)
                    task.result()  # a search that failed raises here (one that finished queued its events)
                if not getter.done():
                    getter.cancel()  # a cancelled get leaves its item in the queue
                    if not running and queue.empty():
                        raise RuntimeError("the searches ended without their results")
                    continue
                item = getter.result()
            else:
                item = queue.get_nowait()
            yield item
            if isinstance(item[1], SearchFinished):
                finished += 1
    finally:
        if getter is not None and not getter.done():
            getter.cancel()
        for task in tasks:
            if not task.done():
                task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


async def run_searches(
    engine: Engine,
    messages: Sequence[ChatMessage],
    configs: Sequence[SearchConfig],
    job_ids: Sequence[str],
    on_event: Emit | None = None,
) -> list[SearchResult]:
    """Several searches of one question at once; the first error cancels the rest and is raised."""
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [
                group.create_task(run_search(engine, messages, config, job_id=job_id, on_event=on_event))
                for config, job_id in zip(configs, job_ids, strict=True)
            ]
    except* BaseException as failures:
        raise failures.exceptions[0] from None
    return [task.result() for task in tasks]
