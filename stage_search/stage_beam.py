"""`stage`: the paper's stage-level beam search. Per stage, N candidates, a tournament, one winner."""

from __future__ import annotations

import time

from stage_search.events import StageDecided, StageStarted
from stage_search.search_job import SearchJob
from stage_search.trace import SearchResult, StageTrace


async def stage_beam_search(job: SearchJob) -> SearchResult:
    return await search_stages(job, n=job.config.beam_width)


async def search_stages(job: SearchJob, n: int) -> SearchResult:
    """Each stage opens with its tag (put there by the search), samples n candidates in one call
    that stop at the closing tag, and keeps the judge's pick. A candidate that hits its token
    limit, ends the turn, or starts another tag is closed by the search, so the answer always has
    every stage, in order, with well-formed tags."""
    accepted = ""
    traces: list[StageTrace] = []
    for stage in job.stages:
        started = time.perf_counter()
        job.emit(StageStarted(stage.name, stage.index))
        prefix, stop = accepted + stage.open_tag, (stage.close_tag,)
        limit = await job.token_limit(stage.index, prefix, judged=n > 1)
        if limit < 1:  # the context is full: the stage stays empty, the answer is cut ("length")
            job.out_of_context = True
            text, steps = "", []
        elif n == 1:
            branch = await job.sample_one(prefix, max_tokens=limit, stop=stop, stage=stage)
            text, steps = branch.text, [branch.step]
        else:
            branch = await job.branch(
                prefix,
                n=n,
                max_tokens=limit,
                stop=stop,
                clean=lambda candidate: job.stages.clean_content(candidate.text),
                accepted=accepted,
                stage=stage,
                stage_index=stage.index,
            )
            text, steps = branch.text, [branch.step]
        accepted += stage.tagged(text)
        traces.append(StageTrace(stage.name, text, steps, time.perf_counter() - started))
        job.emit(StageDecided(stage.name, stage.index, text))
    return job.result(traces)
