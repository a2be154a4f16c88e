"""`majority` (baseline, self-consistency): N whole answers in one call; the conclusion most of
them give wins, and the judge breaks a tie between equally frequent conclusions."""

from __future__ import annotations

import time
from collections import Counter

from stage_search.answers import normalize_answer
from stage_search.judge import Contender
from stage_search.search_job import SearchJob
from stage_search.trace import SearchResult


async def majority_vote(job: SearchJob) -> SearchResult:
    """Every sampled answer votes, merged copies included; an empty conclusion (an answer cut
    short) does not vote unless no answer has one. Among the answers whose conclusion has the
    most votes, the first answer of each goes to the judge's tournament (whole answers, as
    best-of-N compares them): one answer when the vote is clear, so no judge tokens."""
    started = time.perf_counter()
    first, last = job.stages.stages[0], job.stages.last
    sampled = await job.sample(
        first.open_tag,
        n=job.config.beam_width,
        max_tokens=await job.answer_token_limit(),
        stop=(),
        clean=lambda candidate: candidate.text,
        stage_index=0,
    )

    def vote(text: str) -> str:
        return normalize_answer(job.stages.parse(first.open_tag + text)[last.name])

    votes = Counter(vote(c.text) for c in sampled.step.candidates)
    if len(votes) > 1:
        votes.pop("", None)
    top = max(votes.values())
    leaders = {answer for answer, count in votes.items() if count == top}
    first_of_answer: dict[str, Contender] = {}
    for contender in sampled.contenders:
        answer = vote(contender.text)
        if answer in leaders and answer not in first_of_answer:
            first_of_answer[answer] = contender
    contenders = list(first_of_answer.values())
    branch = await job.pick(sampled, contenders, accepted="", stage=None, stage_index=0)
    return await job.whole_answer_result(branch, started)
