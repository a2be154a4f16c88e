"""A small scripted engine for pure-algorithm tests of the search (the real engine is tested too).

Candidates come from a script; the judge prefers the candidate with the higher number in its
text ("cand-7" beats "cand-3"), optionally with a bias toward the first slot. The pointwise
verifier's P("yes") grows with that number too: log-odds of number - `yes_from` (0 at it). It records calls,
aborts, and "waves": sets of judge calls that were in flight together.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Callable, Sequence

from models.engine import (
    Candidate,
    ChatMessage,
    ChoiceResult,
    Engine,
    EngineStats,
    Generation,
    Prompt,
    SamplingSettings,
)

_PAIR = re.compile(r"Response 1:\n(.*?)\n\nResponse 2:\n(.*?)\n\nThe better response is", re.S)
POINTWISE_CUE = "Answer yes or no.\n\n"


def score(text: str) -> int:
    numbers = re.findall(r"cand-(\d+)", text)
    return int(numbers[-1]) if numbers else 0


class ScriptedEngine(Engine):
    model_name = "scripted"
    max_model_len = 100_000

    def __init__(
        self,
        texts: Callable[[Prompt, SamplingSettings], Sequence[str]],
        first_slot_bias: float = 0.0,
        verdict_text: str | None = None,
        finish_reason: str = "stop",
        yes_from: float = 5.0,
    ):
        self._texts = texts
        self._bias = first_slot_bias
        self._verdict_text = verdict_text
        self._finish_reason = finish_reason
        self._yes_from = yes_from
        self.scored: list[int] = []  # the number of each candidate the pointwise verifier scored
        self.prompts: list[str] = []
        self.choose_calls = 0
        self.judge_generations = 0
        self.waves = 0
        self._in_flight = 0
        self.aborted: list[str] = []
        self.hang = False

    def render(self, messages: Sequence[ChatMessage], assistant_prefix: str = "") -> Prompt:
        text = "\n".join(
            m.content if isinstance(m.content, str) else " ".join(p.text for p in m.content) for m in messages
        )
        return Prompt(text=f"{text}\nASSISTANT:{assistant_prefix}")

    async def generate(self, prompt, settings, *, job_id, priority=0) -> Generation:
        self.prompts.append(prompt.text)
        if self.hang:
            await asyncio.Event().wait()
        if "The better response is" in prompt.text:
            self.judge_generations += 1
            texts = [self._verdict_text or ""] * settings.n
        else:
            texts = list(self._texts(prompt, settings))[: settings.n]
        candidates = tuple(
            Candidate(
                t,
                len(t.split()) + 1,
                -1.0,
                self._finish_reason,
                settings.stop[0] if settings.stop and self._finish_reason == "stop" else None,
            )
            for t in texts
        )
        await asyncio.sleep(0)
        return Generation(candidates, prompt_tokens=len(prompt.text.split()), cached_tokens=0)

    async def choose(self, prompt, options, *, job_id, priority=0) -> ChoiceResult:
        self.choose_calls += 1
        if self._in_flight == 0:
            self.waves += 1
        self._in_flight += 1
        try:
            await asyncio.sleep(0.001)
        finally:
            self._in_flight -= 1
        if POINTWISE_CUE in prompt.text:
            number = score(prompt.text[prompt.text.rindex(POINTWISE_CUE) :])  # the candidate follows the question
            self.scored.append(number)
            p_yes = 1 / (1 + math.exp(-(number - self._yes_from)))
            return ChoiceResult({options[0]: p_yes, options[1]: 1 - p_yes}, len(prompt.text.split()), 0)
        first, second = _PAIR.search(prompt.text).groups()
        p_first = 1 / (1 + math.exp(-(score(first) - score(second)) - self._bias))
        return ChoiceResult({options[0]: p_first, options[1]: 1 - p_first}, len(prompt.text.split()), 0)

    async def count_tokens(self, text: str) -> int:
        return len(text.split())

    async def abort(self, job_id: str) -> None:
        self.aborted.append(job_id)

    async def is_healthy(self) -> bool:
        return True

    def stats(self) -> EngineStats:
        return EngineStats()

    async def shutdown(self) -> None:
        pass
