"""`best_of_n` (baseline): N whole answers in one call, reduced to one by the same pairwise judge."""

from __future__ import annotations

import time

from stage_search.search_job import SearchJob
from stage_search.trace import SearchResult


async def best_of_n(job: SearchJob) -> SearchResult:
    """The answers start at the first stage's tag and run to the end of the turn; the judge
    compares them whole."""
    started = time.perf_counter()
    branch = await job.branch(
        job.stages.stages[0].open_tag,
        n=job.config.beam_width,
        max_tokens=await job.answer_token_limit(),
        stop=(),
        clean=lambda candidate: candidate.text,
        accepted="",
        stage=None,
        stage_index=0,
    )
    return await job.whole_answer_result(branch, started)
