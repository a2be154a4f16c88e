"""The pointwise verifier: one score per candidate, read from one constrained token ("yes" or "no")
after the answer that ends with it. The paper's final search (SWIRES) ranks candidates this way with
a reward model; here any chat model can play the part, the served model itself or a separate one."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence

from models.engine import Engine
from stage_search.judge import Contender, JudgeContext
from stage_search.trace import ScoreTrace

VERDICT_OPTIONS = ("yes", "no")
# Log-odds are clipped here: a verifier sure to the last float would otherwise score infinity.
_MAX_LOG_ODDS = 30.0


def log_odds(probability: float) -> float:
    """log(p / (1 - p)), within ±_MAX_LOG_ODDS: the score a yes/no verifier gives, on a reward
    model's scale (unbounded, 0 for undecided)."""
    if probability <= 0.0:
        return -_MAX_LOG_ODDS
    if probability >= 1.0:
        return _MAX_LOG_ODDS
    return max(-_MAX_LOG_ODDS, min(_MAX_LOG_ODDS, math.log(probability / (1.0 - probability))))


def best(scores: Sequence[ScoreTrace]) -> ScoreTrace:
    """The highest score; a tie goes to the lower candidate index."""
    return max(scores, key=lambda s: (s.score, -s.index))


def ranked(scores: Sequence[ScoreTrace]) -> list[ScoreTrace]:
    """Best first; ties by the lower candidate index."""
    return sorted(scores, key=lambda s: (-s.score, s.index))


class PointwiseVerifier:
    """Scores candidates one at a time, all of a step at once."""

    def __init__(self, engine: Engine, *, job_id: str):
        self._engine = engine
        self._job_id = job_id

    async def score(self, context: JudgeContext, contender: Contender, priority: int = 0) -> ScoreTrace:
        prompt = self._engine.render(context.scored_messages(contender.text))
        choice = await self._engine.choose(prompt, VERDICT_OPTIONS, job_id=self._job_id, priority=priority)
        probability = choice.probabilities[VERDICT_OPTIONS[0]]
        return ScoreTrace(contender.index, probability, log_odds(probability), choice.prompt_tokens + 1)

    async def score_all(
        self, context: JudgeContext, contenders: Sequence[Contender], priority: int = 0
    ) -> list[ScoreTrace]:
        """Each contender's score, in the contenders' order; the calls run concurrently."""
        return list(await asyncio.gather(*(self.score(context, c, priority) for c in contenders)))
