"""An OpenAI-compatible model that scores answers no rule can read, as MMVet's and MathVista's own
scorers use GPT: a free-form answer gets a correctness score from 0 to 1 against the reference
(MMVet's partial credit), and a wordy answer to a math or choice question is reduced to the bare
answer, which the rules then compare (MathVista's extraction). The prompts are ours."""

from __future__ import annotations

import re
from dataclasses import dataclass

import httpx

from server.http_retry import later, post_with_backoff

_SCORE = re.compile(r"(?<![\d.])(0(?:\.\d+)?|1(?:\.0+)?)(?![\d.])")


@dataclass
class OpenAnswerJudge:
    client: httpx.AsyncClient  # its base URL is the judge's API root, ending in /v1
    model: str
    calls: int = 0

    async def _ask(self, text: str) -> str:
        self.calls += 1
        body = {"model": self.model, "messages": [{"role": "user", "content": text}], "temperature": 0}
        response = await post_with_backoff(self.client, "/chat/completions", body, retried=later, retries=5)
        response.raise_for_status()
        return str(response.json()["choices"][0]["message"]["content"] or "")

    async def score(self, question: str, reference: str, prediction: str) -> float:
        """How right `prediction` is, from 0 to 1 (0 when the judge's reply holds no such number)."""
        reply = await self._ask(
            "Grade an answer against the reference answer to a question about an image. Give 1.0 when it "
            "is fully right, 0.0 when it is wrong, and a value in between for a partly right answer (for "
            "example half of the items asked for). Where the reference joins items with <AND>, all are "
            "needed; with <OR>, any one is enough. Reply with the number only.\n\n"
            f"Question: {question}\nReference answer: {reference}\nAnswer to grade: {prediction}\nScore:"
        )
        found = _SCORE.search(reply)
        return float(found.group(1)) if found else 0.0

    async def extract(self, question: str, prediction: str) -> str:
        """The bare answer a response gives (a number, an option's letter or a short text)."""
        reply = await self._ask(
            "Below are a question and a model's response to it. Write only the final answer the response "
            "gives: a number without units for a numeric question, the option's letter for a multiple-choice "
            "question, else the answer in as few words as the response allows. Write nothing else.\n\n"
            f"{question}\n\nResponse: {prediction}\n\nFinal answer:"
        )
        return reply.strip()
