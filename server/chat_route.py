"""POST /v1/chat/completions: one request, one search job, answered whole or streamed as SSE."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response, StreamingResponse
from starlette.background import BackgroundTask

from server.auth import require_api_key
from server.chat_output import StageTextWriter, whole_message
from server.chat_request import ChatJob, to_chat_job
from server.errors import INTERNAL_ERROR, APIError, ServerShuttingDown, search_error
from server.metrics import outcome_of
from server.schemas import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    Choice,
    ChunkChoice,
    ChunkDelta,
    PromptTokensDetails,
    ReasoningInfo,
    Usage,
)
from server.sse import SSE_DONE, sse_event
from server.state import ServerState, get_state
from stage_search.events import SearchEvent, SearchFinished, StageDecided
from stage_search.search import run_search, stream_search
from stage_search.trace import SearchResult

log = logging.getLogger("llava_o1.server")
router = APIRouter()

DISCONNECT_POLL_S = 0.25


@router.post("/v1/chat/completions", dependencies=[Depends(require_api_key)], response_model=ChatCompletion)
async def chat_completions(body: ChatCompletionRequest, request: Request, state: ServerState = Depends(get_state)):
    job = await to_chat_job(body, state.settings, state.model_names)
    request.state.strategy = job.config.strategy
    if job.auto_beam_width:
        # Decided on arrival, from the queue this request joins.
        width = state.admission.auto_beam_width(state.settings.max_beam_width)
        job = replace(job, config=job.config.with_(beam_width=width))
    completion_id = f"chatcmpl-{uuid.uuid4().hex}"
    deadline = asyncio.get_running_loop().time() + job.timeout_s
    slot = contextlib.AsyncExitStack()
    try:
        # Waiting for a slot counts toward the deadline; a full queue is refused at once (429).
        async with asyncio.timeout_at(deadline):
            await slot.enter_async_context(state.admission.slot())
        if body.stream:
            # The stream owns the slot from here and releases it when it ends; the background task
            # releases it too if the client left before the stream ever started.
            return StreamingResponse(
                _sse(state, job, completion_id, request, slot, deadline),
                media_type="text/event-stream",
                background=BackgroundTask(slot.aclose),
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        async with slot, asyncio.timeout_at(deadline):
            result = await _search_until_disconnect(state, job, completion_id, request)
    except Exception as exc:
        await slot.aclose()
        error = search_error(exc, job.timeout_s)
        if error is None:
            raise
        raise error from exc
    return Response(_completion(state, job, completion_id, result).model_dump_json(), media_type="application/json")


class _FirstStageClock:
    """Records the time from the request's start to the first decided stage."""

    def __init__(self, request: Request):
        self._started = getattr(request.state, "started", time.perf_counter())
        self.seconds: float | None = None

    def __call__(self, event: SearchEvent) -> None:
        if self.seconds is None and isinstance(event, StageDecided):
            self.seconds = time.perf_counter() - self._started


async def _search_until_disconnect(state: ServerState, job: ChatJob, job_id: str, request: Request) -> SearchResult:
    """Run the search; if the client goes away first, cancel it (which aborts its engine work)."""
    clock = _FirstStageClock(request)
    search = asyncio.create_task(run_search(state.engine, job.messages, job.config, job_id=job_id, on_event=clock))
    try:
        while True:
            done, _ = await asyncio.wait({search}, timeout=DISCONNECT_POLL_S)
            if done:
                result = search.result()
                state.metrics.record_search(result, clock.seconds)
                return result
            if await request.is_disconnected():
                log.info("client of %s went away; search cancelled", job_id)
                raise APIError(499, "client closed the request")
            if state.lifecycle.stopping:
                raise ServerShuttingDown()
    finally:
        if not search.done():
            search.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await search


def _usage(result: SearchResult) -> Usage:
    u = result.usage
    return Usage(
        prompt_tokens=u.prompt_tokens,
        completion_tokens=u.completion_tokens,
        total_tokens=u.prompt_tokens + u.completion_tokens,
        judge_tokens=u.judge_tokens,
        prompt_tokens_details=PromptTokensDetails(cached_tokens=u.cached_tokens),
    )


def _reasoning(job: ChatJob, result: SearchResult) -> ReasoningInfo:
    return ReasoningInfo(
        strategy=job.config.strategy,
        beam_width=job.config.beam_width,
        judge=job.config.judge,
        debias=job.config.debias,
        trace=result.to_dict() if job.trace else None,
    )


def _completion(state: ServerState, job: ChatJob, completion_id: str, result: SearchResult) -> ChatCompletion:
    message = whole_message(result, job.config.stages, job.output)
    return ChatCompletion(
        id=completion_id,
        created=int(time.time()),
        model=state.model_names[0],
        choices=[Choice(message=message, finish_reason=result.finish_reason)],
        usage=_usage(result),
        reasoning=_reasoning(job, result),
    )


async def _sse(
    state: ServerState,
    job: ChatJob,
    completion_id: str,
    request: Request,
    slot: contextlib.AsyncExitStack,
    deadline: float,
) -> AsyncIterator[str]:
    """chat.completion.chunk events: a role chunk, stage pieces as they are decided, the finish
    chunk, a usage chunk when asked, then [DONE]. Errors after the start arrive as an error event.
    A client that disconnects cancels this generator, which cancels the search and its engine work."""
    created = int(time.time())
    model = state.model_names[0]

    def chunk(choices: list[ChunkChoice], **extensions) -> str:
        return sse_event(
            ChatCompletionChunk(id=completion_id, created=created, model=model, choices=choices, **extensions)
        )

    writer = StageTextWriter(job.config.stages, job.output)
    clock = _FirstStageClock(request)
    yield chunk([ChunkChoice(delta=ChunkDelta(role="assistant", content=""))])
    try:
        events = stream_search(state.engine, job.messages, job.config, job_id=completion_id)
        # Closed on the way out, whatever the way: a client that leaves must stop the search now,
        # not when the garbage collector gets to the abandoned generators.
        guarded = state.lifecycle.unless_stopping(events)
        async with slot, asyncio.timeout_at(deadline), contextlib.aclosing(guarded):
            async for event in guarded:
                clock(event)
                for piece in writer.pieces(event):
                    delta = (
                        ChunkDelta(stage=piece.stage, content=piece.text)
                        if piece.field == "content"
                        else ChunkDelta(stage=piece.stage, reasoning_content=piece.text)
                    )
                    yield chunk([ChunkChoice(delta=delta)])
                if isinstance(event, SearchFinished):
                    result = event.result
        state.metrics.record_search(result, clock.seconds)
        yield chunk(
            [ChunkChoice(delta=ChunkDelta(), finish_reason=result.finish_reason)], reasoning=_reasoning(job, result)
        )
        if job.include_usage:
            yield chunk([], usage=_usage(result))
    except (asyncio.CancelledError, GeneratorExit):
        request.state.outcome = "cancelled"  # the client went away mid-stream
        raise
    except Exception as exc:  # the stream has started: report in-band rather than cut the connection
        error = search_error(exc, job.timeout_s)
        if error is None:
            log.exception("search %s failed while streaming", completion_id)
            error = INTERNAL_ERROR
        request.state.outcome = outcome_of(error.status)
        yield sse_event(error.body())
    yield SSE_DONE
