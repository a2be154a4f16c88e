"""POST /v1/chat/completions: one request, one search job, answered whole or streamed as SSE."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, replace

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response, StreamingResponse
from starlette.background import BackgroundTask

from server.admission import Ticket
from server.auth import require_api_key
from server.chat_output import StageTextWriter, choice_logprobs, delta_of, whole_message
from server.chat_request import ChatJob, to_chat_job
from server.errors import INTERNAL_ERROR, APIError, search_error
from server.metrics import outcome_of
from server.schemas import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    Choice,
    ChunkChoice,
    ChunkDelta,
    CompletionTokensDetails,
    PromptTokensDetails,
    ReasoningInfo,
    Usage,
)
from server.sse import SSE_DONE, SSE_KEEPALIVE, sse_event, with_keepalives
from server.state import ServerState, get_state
from stage_search.config import SearchConfig
from stage_search.events import SearchEvent, SearchFinished, StageDecided
from stage_search.search import run_searches, stream_searches
from stage_search.trace import SearchResult
from stage_search.trace import Usage as SearchUsage

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
    searches = _Searches.of(job, f"chatcmpl-{uuid.uuid4().hex}")
    deadline = asyncio.get_running_loop().time() + job.timeout_s
    if body.stream:
        # Its place in the queue is taken now, while a full queue can still be a 429; the stream
        # waits for its slot itself, its role chunk and keep-alives already on the wire. The
        # background task gives the place back if the stream never got to use it.
        ticket = state.admission.ticket()
        return StreamingResponse(
            _sse(state, job, searches, request, deadline, ticket),
            media_type="text/event-stream",
            background=BackgroundTask(ticket.cancel),
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    try:
        # Waiting for a slot counts toward the deadline; a full queue is refused at once (429).
        async with asyncio.timeout_at(deadline), state.admission.slot():
            results = await _search_until_disconnect(state, job, searches, request)
    except Exception as exc:
        error = search_error(exc, job.timeout_s)
        if error is None:
            raise
        raise error from exc
    return Response(
        _completion(state, job, searches.completion_id, results).model_dump_json(), media_type="application/json"
    )


@dataclass(frozen=True)
class _Searches:
    """A request's searches: one per choice, each with its own job id (its engine work's tag) and,
    for a seeded request, its own seed."""

    completion_id: str
    configs: list[SearchConfig]
    job_ids: list[str]

    @classmethod
    def of(cls, job: ChatJob, completion_id: str) -> _Searches:
        if job.n == 1:
            return cls(completion_id, [job.config], [completion_id])
        seed = job.config.seed
        configs = [
            job.config if seed is None else job.config.with_(seed=seed + CHOICE_SEED_STRIDE * i) for i in range(job.n)
        ]
        return cls(completion_id, configs, [f"{completion_id}-{i}" for i in range(job.n)])


# Choice i of a seeded request searches with seed + i * this: each search draws one seed per engine
# call, counting up from its own, so the choices' seeds never meet.
CHOICE_SEED_STRIDE = 1_000_003


class _FirstStageClock:
    """Records the time from the request's start to the first decided stage."""

    def __init__(self, request: Request):
        self._started = getattr(request.state, "started", time.perf_counter())
        self.seconds: float | None = None

    def __call__(self, event: SearchEvent) -> None:
        if self.seconds is None and isinstance(event, StageDecided):
            self.seconds = time.perf_counter() - self._started


async def _search_until_disconnect(
    state: ServerState, job: ChatJob, searches: _Searches, request: Request
) -> list[SearchResult]:
    """Run the searches; if the client goes away first, cancel them (which aborts their engine work)."""
    clock = _FirstStageClock(request)
    task = asyncio.create_task(
        run_searches(state.engine, job.messages, searches.configs, searches.job_ids, on_event=clock)
    )
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=DISCONNECT_POLL_S)
            if done:
                results = task.result()
                for result in results:
                    state.metrics.record_search(result, clock.seconds)
                return results
            if await request.is_disconnected():
                log.info("client of %s went away; search cancelled", searches.completion_id)
                raise APIError(499, "client closed the request")
            interruption = state.lifecycle.interruption
            if interruption is not None:
                raise interruption
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def _usage(results: list[SearchResult]) -> Usage:
    u = SearchUsage()
    for result in results:
        u.add(result.usage)
    return Usage(
        prompt_tokens=u.prompt_tokens,
        completion_tokens=u.completion_tokens,
        total_tokens=u.prompt_tokens + u.completion_tokens,
        judge_tokens=u.judge_tokens,
        judge_calls=u.judge_calls,
        search_tokens=u.search_tokens,
        prompt_tokens_details=PromptTokensDetails(cached_tokens=u.cached_tokens),
        completion_tokens_details=CompletionTokensDetails(reasoning_tokens=u.reasoning_tokens),
    )


def _reasoning(job: ChatJob, results: list[SearchResult]) -> ReasoningInfo:
    return ReasoningInfo(
        strategy=job.config.strategy,
        beam_width=job.config.beam_width,
        judge=job.config.judge,
        debias=job.config.debias,
        verifier=results[0].verifier,
        verifier_form=results[0].verifier_form,
        retraces=sum(r.retraces for r in results),
        effort=job.effort,
        trace=results[0].to_dict() if job.trace else None,
        traces=[r.to_dict() for r in results] if job.trace and len(results) > 1 else None,
    )


def _completion(state: ServerState, job: ChatJob, completion_id: str, results: list[SearchResult]) -> ChatCompletion:
    return ChatCompletion(
        id=completion_id,
        created=int(time.time()),
        model=state.model_names[0],
        choices=[
            Choice(
                index=i,
                message=whole_message(result, job.config.stages, job.output),
                logprobs=choice_logprobs(result),
                finish_reason=result.finish_reason,
            )
            for i, result in enumerate(results)
        ],
        usage=_usage(results),
        reasoning=_reasoning(job, results),
    )


async def _admitted_events(
    state: ServerState, job: ChatJob, searches: _Searches, ticket: Ticket
) -> AsyncGenerator[tuple[int, SearchEvent], None]:
    """The choices' search events, once the request holds a search slot (released when this ends)."""
    async with ticket.admitted():
        events = stream_searches(state.engine, job.messages, searches.configs, searches.job_ids)
        async with contextlib.aclosing(events):
            async for item in events:
                yield item


async def _sse(
    state: ServerState, job: ChatJob, searches: _Searches, request: Request, deadline: float, ticket: Ticket
) -> AsyncIterator[str]:
    """chat.completion.chunk events: a role chunk per choice at once, stage pieces as they are
    decided (SSE comments while a long stage is thinking), each choice's finish chunk, a usage chunk
    when asked, then [DONE]. Errors after the start arrive as an error event. A client that
    disconnects cancels this generator, which cancels the searches and their engine work."""
    created = int(time.time())
    model = state.model_names[0]

    def chunk(choices: list[ChunkChoice], **extensions) -> str:
        return sse_event(
            ChatCompletionChunk(id=searches.completion_id, created=created, model=model, choices=choices, **extensions)
        )

    writers = [StageTextWriter(job.config.stages, job.output) for _ in searches.configs]
    clock = _FirstStageClock(request)
    results: dict[int, SearchResult] = {}
    try:
        for index in range(len(writers)):
            yield chunk([ChunkChoice(index=index, delta=ChunkDelta(role="assistant", content=""))])
        source = _admitted_events(state, job, searches, ticket)
        # Closed on the way out, whatever the way: a client that leaves must stop the search now,
        # not when the garbage collector gets to the abandoned generators.
        guarded = state.lifecycle.until_interrupted(with_keepalives(source, state.settings.sse_keepalive_s))
        async with asyncio.timeout_at(deadline), contextlib.aclosing(source), contextlib.aclosing(guarded):
            async for item in guarded:
                if item is None:
                    yield SSE_KEEPALIVE
                    continue
                index, event = item
                clock(event)
                for piece in writers[index].pieces(event):
                    yield chunk([ChunkChoice(index=index, delta=delta_of(piece))])
                if isinstance(event, SearchFinished):
                    result = results[index] = event.result
                    state.metrics.record_search(result, clock.seconds)
                    finish = ChunkChoice(
                        index=index,
                        delta=ChunkDelta(),
                        logprobs=choice_logprobs(result),
                        finish_reason=result.finish_reason,
                    )
                    yield chunk([finish], reasoning=_reasoning(job, [result]))
        if job.include_usage:
            yield chunk([], usage=_usage([results[i] for i in sorted(results)]))
    except (asyncio.CancelledError, GeneratorExit):
        request.state.outcome = "cancelled"  # the client went away mid-stream
        raise
    except Exception as exc:  # the stream has started: report in-band rather than cut the connection
        error = search_error(exc, job.timeout_s)
        if error is None:
            log.exception("search %s failed while streaming", searches.completion_id)
            error = INTERNAL_ERROR
        request.state.outcome = outcome_of(error.status)
        yield sse_event(error.body())
    finally:
        ticket.cancel()  # the place in the queue, if the stream ended before it waited for a slot
    yield SSE_DONE
