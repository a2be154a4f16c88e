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
            prefix = accepted + stage.open_tag + body
            wanted = min(job.budget_limit(stage.index), config.max_tokens_per_stage - used)
            limit = min(await job.token_limit(stage.index, prefix, judged=config.beam_width > 1), wanted)
            if limit < 1:  # the context is full: the stage ends here, the answer is cut ("length")
                job.out_of_context = True
                break
            branch = await job.branch(
                prefix,
                n=config.beam_width,
                max_tokens=limit,
                stop=(SENTENCE_END, stage.close_tag),
                clean=clean,
                accepted=prefix,
                stage=stage,
                stage_index=stage.index,
            )
            body += branch.text
            steps.append(branch.step)
            used += branch.candidate.num_tokens
            sentence_only = branch.candidate.stop_reason == SENTENCE_END and branch.text.endswith(SENTENCE_END)
            # A step the context cut short is the stage's last: the later stages keep their room.
            last = len(steps) >= config.max_sentences_per_stage or used >= config.max_tokens_per_stage or limit < wanted
            if not sentence_only or last:
                break
        accepted += stage.tagged(body)
        traces.append(StageTrace(stage.name, body, steps, time.perf_counter() - started))
        job.emit(StageDecided(stage.name, stage.index, body))
    return job.result(traces)
