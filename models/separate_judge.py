"""An engine whose judge runs elsewhere: candidates from one engine, the pairwise judge's calls to
another (a judge or reward model on its own server, `--judge-engine-url`). The paper's final
version scores candidates with a separate reward model; this is where such a model plugs in.

The judge renders its own prompts with the judge engine (its model's chat template), so the two
models need not share a template or a tokenizer.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

from models.engine import (
    ChatMessage,
    ChoiceResult,
    Engine,
    EngineStats,
    Generation,
    Prompt,
    SamplingSettings,
    StreamDelta,
)


class SeparateJudge(Engine):
    """`main` for everything but the judge, which asks `judge`."""

    def __init__(self, main: Engine, judge: Engine):
        self.main = main
        self.judge = judge
        self.model_name = main.model_name
        self.max_model_len = main.max_model_len
        self.outlives_engine_outages = main.outlives_engine_outages

    def judge_engine(self) -> Engine:
        return self.judge

    def render(self, messages: Sequence[ChatMessage], assistant_prefix: str = "") -> Prompt:
        return self.main.render(messages, assistant_prefix)

    async def generate(
        self, prompt: Prompt, settings: SamplingSettings, *, job_id: str, priority: int = 0
    ) -> Generation:
        return await self.main.generate(prompt, settings, job_id=job_id, priority=priority)

    async def stream(
        self, prompt: Prompt, settings: SamplingSettings, *, job_id: str, priority: int = 0
    ) -> AsyncIterator[StreamDelta]:
        async for delta in self.main.stream(prompt, settings, job_id=job_id, priority=priority):
            yield delta

    async def choose(self, prompt: Prompt, options: Sequence[str], *, job_id: str, priority: int = 0) -> ChoiceResult:
        return await self.main.choose(prompt, options, job_id=job_id, priority=priority)

    async def count_tokens(self, text: str) -> int:
        return await self.main.count_tokens(text)

    async def abort(self, job_id: str) -> None:
        await self.main.abort(job_id)
        await self.judge.abort(job_id)

    async def is_healthy(self) -> bool:
        return await self.main.is_healthy() and await self.judge.is_healthy()

    def stats(self) -> EngineStats:
        return self.main.stats()

    def num_unfinished_requests(self) -> int:
        return sum(getattr(e, "num_unfinished_requests", lambda: 0)() for e in (self.main, self.judge))

    async def shutdown(self) -> None:
        await self.judge.shutdown()
        await self.main.shutdown()
