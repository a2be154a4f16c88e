"""`best_of_n` (baseline): N whole answers in one call, reduced to one by the same pairwise judge."""

from __future__ import annotations

import time

from stage_search.events import StageDecided, StageStarted
from stage_search.search_job import SearchJob
from stage_search.trace import SearchResult, StageTrace


async def best_of_n(job: SearchJob) -> SearchResult:
    """The answers start at the first stage's tag and run to the end of the turn; the winner is
    then split into stages (missing ones empty), so the result has the same shape as the others.
    Stage events all come at the end: nothing is decided before the whole answer is."""
    started = time.perf_counter()
    first = job.stages.stages[0]
    branch = await job.branch(
        first.open_tag,
        n=job.config.beam_width,
        max_tokens=job.config.total_token_budget,
        stop=(),
        clean=lambda candidate: candidate.text,
        accepted="",
        stage=None,
        stage_index=0,
    )
    contents = job.stages.parse(first.open_tag + branch.text)
    seconds = time.perf_counter() - started
    traces = []
    for stage in job.stages:
        job.emit(StageStarted(stage.name, stage.index))
        traces.append(StageTrace(stage.name, contents[stage.name], [], seconds if stage.index == 0 else 0.0))
        job.emit(StageDecided(stage.name, stage.index, contents[stage.name]))
    return job.result(traces, answer_steps=[branch.step])
