"""`swires`: the paper's final search (LLaVA-CoT, ICCV 2025): stage-wise retracing, every candidate
scored pointwise by the verifier. Read from the published code (inference/VLMEvalKit/swires.py):

- SUMMARY: one sample.
- CAPTION: `captions` samples, scored; the best `kept_captions` are kept.
- REASONING: `reasonings_per_caption` samples continuing each kept caption, each scored. The
  reasonings of every attempt stay in one pool.
- Retrace: while the second-best score in the pool is at or below `cutoff`, go back and sample new
  captions (and their reasonings), at most `max_retraces` times.
- CONCLUSION: one sample continuing each of the `conclusions` best reasoning paths of the pool; the
  best-scored conclusion is the answer, with the caption and reasoning of its path.

Captions and reasonings are final only once the conclusions are scored, so a stream sends the
summary as it is sampled and the other stages together at the end. A stage's candidates are
numbered across its steps; each step records its attempt, its scores, its best (`winner`) and what
went on from it (`kept`); the stage's `chosen` is the candidate on the answer's path.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass

from models.engine import Candidate
from stage_search.events import StageDecided, StageStarted
from stage_search.search_job import SearchJob
from stage_search.stages import Stage
from stage_search.trace import SearchResult, StageTrace, StepTrace


@dataclass(frozen=True)
class _Piece:
    """A scored candidate on one path: its number in its stage, and the answer it continues."""

    index: int
    text: str
    score: float
    candidate: Candidate
    before: str  # the tagged stages before it
    before_tokens: int

    def path(self, stage: Stage) -> tuple[str, int]:
        """The tagged answer through this candidate, and its tokens: what the next stage continues."""
        return self.before + stage.tagged(self.text), self.before_tokens + self.candidate.num_tokens


def _best_first(pieces: list[_Piece]) -> list[_Piece]:
    return sorted(pieces, key=lambda p: (-p.score, p.index))


class _Stages:
    """The stage traces as the search fills them, and a step that samples and scores."""

    def __init__(self, job: SearchJob):
        self.job = job
        self.traces = {stage.name: StageTrace(stage.name) for stage in job.stages}
        self._numbers = {stage.name: itertools.count() for stage in job.stages}

    async def step(
        self, stage: Stage, before: str, before_tokens: int, n: int, attempt: int
    ) -> tuple[StepTrace, list[_Piece]]:
        """n candidates of `stage` continuing `before`, each scored; the step and its pieces, best
        first. A merged copy has its original's score. Unscored (no room for the verifier), they
        stay in the order they were sampled."""
        job = self.job
        prefix = before + stage.open_tag
        limit = await job.token_limit(stage.index, prefix, judged=True, accepted_tokens=before_tokens)
        numbers = [next(self._numbers[stage.name]) for _ in range(n)]  # before awaiting: steps run at once
        sampled = await job.sample(
            prefix,
            n=n,
            max_tokens=max(1, limit),
            stop=(stage.close_tag,),
            clean=lambda candidate: job.stages.clean_content(candidate.text),
            stage_index=stage.index,
            first_index=numbers[0],
            extends_last_prompt=False,
        )
        step = sampled.step
        step.attempt = attempt
        self.traces[stage.name].steps.append(step)
        scores = await job.score(step, sampled.contenders, accepted=before, stage=stage, stage_index=stage.index)
        score_of = {s.index: s.score for s in scores}
        pieces = [
            _Piece(
                trace.index,
                trace.text,
                score_of.get(trace.index if trace.merged_into is None else trace.merged_into, 0.0),
                candidate,
                before,
                before_tokens,
            )
            for trace, candidate in zip(step.candidates, sampled.candidates, strict=True)
        ]
        if scores:
            pieces = _best_first(pieces)
        step.winner = pieces[0].index
        return step, pieces


async def swires(job: SearchJob) -> SearchResult:
    settings = job.config.swires
    summary_stage, caption_stage, reasoning_stage, conclusion_stage = job.stages.stages
    stages = _Stages(job)

    started = time.perf_counter()
    job.emit(StageStarted(summary_stage.name, summary_stage.index))
    limit = await job.token_limit(summary_stage.index, summary_stage.open_tag)
    summary = await job.sample_one(
        summary_stage.open_tag, max_tokens=limit, stop=(summary_stage.close_tag,), stage=summary_stage
    )
    stages.traces[summary_stage.name] = StageTrace(
        summary_stage.name, summary.text, [summary.step], time.perf_counter() - started
    )
    job.emit(StageDecided(summary_stage.name, summary_stage.index, summary.text))
    after_summary = summary_stage.tagged(summary.text), summary.candidate.num_tokens

    job.emit(StageStarted(caption_stage.name, caption_stage.index))
    seconds = {caption_stage.name: 0.0, reasoning_stage.name: 0.0}
    pool: list[tuple[_Piece, _Piece]] = []  # (caption, reasoning) paths of every attempt
    for attempt in range(settings.max_retraces + 1):
        if attempt:
            job.retraces += 1
        started = time.perf_counter()
        caption_step, captions = await stages.step(caption_stage, *after_summary, settings.captions, attempt)
        kept = captions[: settings.kept_captions]
        caption_step.kept = [c.index for c in kept]
        reasoned = time.perf_counter()
        seconds[caption_stage.name] += reasoned - started
        steps = await asyncio.gather(
            *(
                stages.step(reasoning_stage, *caption.path(caption_stage), settings.reasonings_per_caption, attempt)
                for caption in kept
            )
        )
        seconds[reasoning_stage.name] += time.perf_counter() - reasoned
        pool += [(caption, reasoning) for caption, (_, pieces) in zip(kept, steps, strict=True) for reasoning in pieces]
        ranked_scores = sorted((reasoning.score for _, reasoning in pool), reverse=True)
        if len(ranked_scores) >= 2 and ranked_scores[1] > settings.cutoff:
            break
    paths = sorted(pool, key=lambda path: (-path[1].score, path[1].index))[: settings.conclusions]
    for reasoning_step in stages.traces[reasoning_stage.name].steps:
        reasoning_step.kept = [r.index for _, r in paths if any(c.index == r.index for c in reasoning_step.candidates)]

    started = time.perf_counter()
    conclusions = await asyncio.gather(
        *(stages.step(conclusion_stage, *reasoning.path(reasoning_stage), 1, 0) for _, reasoning in paths)
    )
    seconds[conclusion_stage.name] = time.perf_counter() - started
    finals = [(path, pieces[0]) for path, (_, pieces) in zip(paths, conclusions, strict=True)]
    (caption, reasoning), conclusion = min(finals, key=lambda final: (-final[1].score, final[1].index))
    job.keep_answer_logprobs(conclusion.candidate, conclusion.text, conclusion_stage.index)

    for stage, piece in ((caption_stage, caption), (reasoning_stage, reasoning), (conclusion_stage, conclusion)):
        trace = stages.traces[stage.name]
        trace.text, trace.chosen, trace.seconds = piece.text, piece.index, seconds[stage.name]
        if stage is not caption_stage:  # the caption's was sent when its first attempt began
            job.emit(StageStarted(stage.name, stage.index))
        job.emit(StageDecided(stage.name, stage.index, piece.text))
    return job.result([stages.traces[stage.name] for stage in job.stages])
