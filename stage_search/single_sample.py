"""`none`: one sample, no judging. Still stage by stage, so the four-stage structure holds."""

from __future__ import annotations

from stage_search.search_job import SearchJob
from stage_search.stage_beam import search_stages
from stage_search.trace import SearchResult


async def single_sample(job: SearchJob) -> SearchResult:
    return await search_stages(job, n=1)
