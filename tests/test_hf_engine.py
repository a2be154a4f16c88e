"""What the transformers engine adds beyond the contract: concurrent calls share forward passes,
without changing what each one samples, and later prompts reuse earlier caches."""

from __future__ import annotations

import asyncio

import pytest
from helpers import image_question, shapes_image

from models.engine import SamplingSettings

pytestmark = pytest.mark.asyncio(loop_scope="session")

GREEDY = SamplingSettings(n=2, max_tokens=24, temperature=0.0, ignore_eos=True)


def prompts(engine):
    # Different lengths and images: the batch pads them to one length.
    return [
        engine.render(image_question("How many shapes? " * k, shapes_image(color=(40 * k, 90, 200))), "<SUMMARY>")
        for k in range(1, 5)
    ]


async def test_concurrent_calls_share_forward_passes_and_sample_the_same(hf_engine):
    asked = prompts(hf_engine)
    alone = [
        await hf_engine.generate(
            p,
            GREEDY,
            job_id=f"alone-{i}",
        )
        for i, p in enumerate(asked)
    ]
    steps = hf_engine.decode_steps
    together = await asyncio.gather(
        *(hf_engine.generate(p, GREEDY, job_id=f"together-{i}") for i, p in enumerate(asked))
    )
    # Alone, each call needs 23 decode steps (the first token comes from the prompt's pass).
    assert hf_engine.decode_steps - steps < 2 * 23
    for a, b in zip(alone, together, strict=True):
        assert [c.text for c in a.candidates] == [c.text for c in b.candidates]


async def test_a_prompt_that_continues_an_earlier_sequence_reuses_its_cache(hf_engine):
    prompt = hf_engine.render(image_question("Describe the image."), "<CAPTION>")
    first = await hf_engine.generate(prompt, SamplingSettings(n=1, max_tokens=8, seed=4), job_id="reuse-a")
    longer = hf_engine.render(image_question("Describe the image."), "<CAPTION>" + first.candidates[0].text)
    again = await hf_engine.generate(longer, SamplingSettings(n=1, max_tokens=4, seed=4), job_id="reuse-b")
    assert again.cached_tokens >= first.prompt_tokens


async def test_without_the_prefix_cache_nothing_is_reused(hf_engine):
    prompt = hf_engine.render(image_question("Describe the image again."), "<CAPTION>")
    await hf_engine.generate(prompt, SamplingSettings(n=1, max_tokens=2), job_id="nocache-a")
    again = await hf_engine.generate(
        prompt, SamplingSettings(n=1, max_tokens=2, use_prefix_cache=False), job_id="nocache-b"
    )
    assert again.cached_tokens == 0
