"""The published procedure's cost profile, for benchmarks only (not a serving strategy).

Per stage: N candidates generated one after another (separate engine calls, prefix cache not
read, so nothing is shared between them), then a pool reduced by N-1 free-text judge matches
one after another, two picked at random each time. In the reasoning stage the model is also asked,
once per candidate, whether that reasoning has an error (free text, shown to the judge with it).
Callers run one question at a time.
What it leaves out (so the comparison errs in the reference's favour): the published code also
decodes the whole sequence at every token to check for stop strings, and it asks the reasoning
error question inside every comparison, where this asks it once per candidate.
"""

from __future__ import annotations

import random
import time

from models.engine import ChatMessage, Engine, SamplingSettings
from stage_search.config import SearchConfig
from stage_search.judge import Contender, JudgeContext, PairwiseJudge
from stage_search.prompts import error_check_question
from stage_search.search_job import SearchJob

ERROR_CHECKED_STAGE = "REASONING"


async def reference_search(
    engine: Engine, messages: list[ChatMessage], config: SearchConfig, *, job_id: str, seed: int = 0
) -> tuple[int, float | None]:
    """Answer one question the published way; returns (candidate tokens, seconds to the first stage)."""
    job = SearchJob(engine, messages, config.with_(judge="generative"), job_id=job_id)
    judge = PairwiseJudge(
        engine, mode="generative", job_id=job_id, max_tokens=config.judge_max_tokens, use_prefix_cache=False
    )
    rng = random.Random(seed)
    accepted, tokens, first_stage = "", 0, None
    for stage in job.stages:
        prompt = engine.render(job.messages, accepted + stage.open_tag)
        settings = SamplingSettings(
            n=1,
            max_tokens=await job.token_limit(stage.index, accepted + stage.open_tag),
            temperature=config.sampling_temperature,
            top_p=config.top_p,
            stop=(stage.close_tag,),
            use_prefix_cache=False,
        )
        texts = []
        for _ in range(config.beam_width):
            candidate = (await engine.generate(prompt, settings, job_id=job_id)).candidates[0]
            tokens += candidate.num_tokens
            texts.append(job.stages.clean_content(candidate.text))
        pool = [Contender(index, text) for index, text in enumerate(texts)]
        context = JudgeContext(tuple(job.messages), accepted, stage)
        if stage.name == ERROR_CHECKED_STAGE:
            pool = [await _with_error_check(engine, context, c, config, job_id) for c in pool]
        while len(pool) > 1:
            a, b = rng.sample(pool, 2)
            winner, _ = await judge.compare(context, a, b, 1)
            pool = [c for c in pool if c is not (b if winner is a else a)]
        accepted += stage.tagged(texts[pool[0].index])
        if first_stage is None:
            first_stage = time.perf_counter() - job.started
    return tokens, first_stage


async def _with_error_check(
    engine: Engine, context: JudgeContext, contender: Contender, config: SearchConfig, job_id: str
) -> Contender:
    """The contender as the judge will see it: its text followed by the model's error check of it."""
    assert context.stage is not None  # the check is asked in a stage, never of whole answers
    prompt = engine.render(context.messages(error_check_question(context.stage, contender.text)))
    settings = SamplingSettings(n=1, max_tokens=config.judge_max_tokens, temperature=0.0, use_prefix_cache=False)
    check = (await engine.generate(prompt, settings, job_id=job_id)).candidates[0]
    return Contender(contender.index, f"{contender.text}\n(Error check: {check.text.strip()})")
