"""`sentence` (baseline): the same beam search, but a step is one sentence instead of a stage."""

from __future__ import annotations

import time

from models.engine import Candidate
from stage_search.events import StageDecided, StageStarted
from stage_search.search_job import SearchJob
from stage_search.trace import SearchResult, StageTrace

SENTENCE_END = "."


async def sentence_beam_search(job: SearchJob) -> SearchResult:
    """Within each stage: sample N next sentences (stop at "." or the closing tag), judge, keep the
    winner, repeat until the winner closes the stage, ends the turn, or the stage's sentence or
    token limit is reached; then the search closes the stage and opens the next."""
    config = job.config
    accepted = ""
    traces: list[StageTrace] = []
    for stage in job.stages:
        started = time.perf_counter()
        job.emit(StageStarted(stage.name, stage.index))
        body, steps, used = "", [], 0

        def clean(candidate: Candidate) -> str:
            text = job.stages.clean_content(candidate.text)
            ends_sentence = candidate.stop_reason == SENTENCE_END and text == candidate.text
            return text + SENTENCE_END if ends_sentence else text

        while True:
            limit = min(job.token_limit(stage.index), config.max_tokens_per_stage - used)
            branch = await job.branch(
                accepted + stage.open_tag + body,
                n=config.beam_width,
                max_tokens=max(limit, 1),
                stop=(SENTENCE_END, stage.close_tag),
                clean=clean,
                accepted=accepted + stage.open_tag + body,
                stage=stage,
                stage_index=stage.index,
            )
            body += branch.text
            steps.append(branch.step)
            used += branch.candidate.num_tokens
            sentence_only = branch.candidate.stop_reason == SENTENCE_END and branch.text.endswith(SENTENCE_END)
            if not sentence_only or len(steps) >= config.max_sentences_per_stage or used >= config.max_tokens_per_stage:
                break
        accepted += stage.tagged(body)
        traces.append(StageTrace(stage.name, body, steps, time.perf_counter() - started))
        job.emit(StageDecided(stage.name, stage.index, body))
    return job.result(traces)
