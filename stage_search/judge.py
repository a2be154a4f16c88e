"""The pairwise judge: the model itself says which of two candidates is better."""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass

from models.engine import ChatMessage, Engine, SamplingSettings
from stage_search.choices import picked_option
from stage_search.prompts import judge_question, parse_verdict, verify_question
from stage_search.stages import Stage
from stage_search.trace import MatchTrace

OPTIONS = ("1", "2")
# A whole answer's sections; its last is the final answer (a closing tag may be missing).
_TAGGED_SECTION = re.compile(r"<([A-Za-z_]+)>(.*?)(?:</\1>|$)", re.S)


@dataclass(frozen=True)
class Contender:
    """A candidate as the judge sees it: its index in the step and its text."""

    index: int
    text: str


@dataclass(frozen=True)
class JudgeContext:
    """What every match or score of one step shares: the conversation (images, question), the
    answer so far, and the stage its candidates are of."""

    conversation: tuple[ChatMessage, ...]
    accepted: str
    stage: Stage | None  # None: whole answers (best-of-N)
    # Whole answers: the text the search wrote before each (the first stage's opening tag).
    whole_opening: str = ""

    def messages(self, judge_text: str) -> list[ChatMessage]:
        # The judge's prompt continues the conversation the candidates were sampled from, so its
        # long prefix (image, question, accepted stages) is already in the engine's prefix cache.
        return [*self.conversation, ChatMessage("assistant", self.accepted), ChatMessage("user", judge_text)]

    def scored_messages(self, candidate: str) -> list[ChatMessage]:
        """The pointwise verifier's prompt: the conversation, the answer so far, then the question
        whether this candidate (in its tags, as the model wrote it) is right, the candidate last.
        Candidates of a step share all but their own text, so the prefix cache holds the rest."""
        if self.stage is None:
            tagged = self.whole_opening + candidate
        else:
            tagged = self.stage.open_tag + candidate + self.stage.close_tag
        return self.messages(verify_question(self.stage, tagged, self.picked_option(candidate)))

    def picked_option(self, candidate: str) -> tuple[str, str] | None:
        """The option a final-stage candidate (or a whole answer's last section) picks, when the
        question is multiple choice."""
        if self.stage is None:
            sections = _TAGGED_SECTION.findall(candidate)
            answer = sections[-1][1] if sections else ""
        else:
            answer = candidate if self.stage.is_final else ""
        return picked_option(self.question(), answer) if answer.strip() else None

    def question(self) -> str:
        """The text of the last user message: the question, with its options if it has any."""
        return next((m.text for m in reversed(self.conversation) if m.role == "user"), "")


@dataclass(frozen=True)
class _Verdict:
    probabilities: tuple[float, float]  # P(slot 1 better), P(slot 2 better)
    text: str | None
    tokens: int
    calls: int = 1  # engine calls: a generative verdict that could not be parsed asks again


class PairwiseJudge:
    """Compares two candidates with one of two judges, optionally in both orders.

    - "logprob": one constrained next token ("1" or "2") and its probabilities; deterministic,
      one forward pass per match.
    - "generative": the paper's free-text verdict ("Since ..., I choose response N"), parsed;
      an unparsable verdict falls back to the logprob judge.
    With `debias`, each match is judged as (a, b) and (b, a) at once and the two probabilities
    averaged, cancelling a preference for the first or second slot.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        mode: str = "logprob",
        debias: bool = False,
        job_id: str,
        max_tokens: int = 96,
        use_prefix_cache: bool = True,
    ):
        self._engine = engine
        self._use_prefix_cache = use_prefix_cache
        self._mode = mode
        self._debias = debias
        self._job_id = job_id
        self._max_tokens = max_tokens

    async def compare(
        self, context: JudgeContext, a: Contender, b: Contender, round_: int, priority: int = 0
    ) -> tuple[Contender, MatchTrace]:
        """Judge a against b; returns the winner and the match record."""
        if self._debias:
            forward, backward = await asyncio.gather(
                self._judge(context, a, b, priority), self._judge(context, b, a, priority)
            )
            p_a = (forward.probabilities[0] + backward.probabilities[1]) / 2
            verdicts: tuple[_Verdict, ...] = (forward, backward)
        else:
            forward = await self._judge(context, a, b, priority)
            p_a = forward.probabilities[0]
            verdicts = (forward,)
        p_b = 1.0 - p_a
        # A tie goes to the lower index, whatever the order shown: keeps debiased verdicts symmetric.
        winner = a if p_a > p_b or (p_a == p_b and a.index < b.index) else b
        match = MatchTrace(
            round=round_,
            pair=(a.index, b.index),
            probabilities=(p_a, p_b),
            winner=winner.index,
            verdicts=tuple(v.text for v in verdicts if v.text is not None),
            judge_tokens=sum(v.tokens for v in verdicts),
            judge_calls=sum(v.calls for v in verdicts),
        )
        return winner, match

    async def _judge(self, context: JudgeContext, first: Contender, second: Contender, priority: int) -> _Verdict:
        text = judge_question(context.stage, first.text, second.text)
        prompt = self._engine.render(context.messages(text))
        if self._mode == "generative":
            generation = await self._engine.generate(
                prompt,
                SamplingSettings(
                    n=1, max_tokens=self._max_tokens, temperature=0.0, use_prefix_cache=self._use_prefix_cache
                ),
                job_id=self._job_id,
                priority=priority,
            )
            verdict = generation.candidates[0]
            tokens = generation.prompt_tokens + verdict.num_tokens
            slot = parse_verdict(verdict.text)
            if slot is not None:
                return _Verdict((1.0, 0.0) if slot == 0 else (0.0, 1.0), verdict.text, tokens)
            fallback = await self._choose(prompt, priority)
            return _Verdict(fallback.probabilities, verdict.text, tokens + fallback.tokens, calls=2)
        return await self._choose(prompt, priority)

    async def _choose(self, prompt, priority: int) -> _Verdict:
        choice = await self._engine.choose(prompt, OPTIONS, job_id=self._job_id, priority=priority)
        probabilities = (choice.probabilities[OPTIONS[0]], choice.probabilities[OPTIONS[1]])
        return _Verdict(probabilities, None, choice.prompt_tokens + 1)
