"""Small builders shared by tests and by the seed-bug reproduction script."""

from __future__ import annotations

import asyncio
import time

from PIL import Image

from models.engine import ChatMessage, ChatPart, Engine, SamplingSettings


def shapes_image(color=(200, 30, 30), size=(80, 60)) -> Image.Image:
    image = Image.new("RGB", size, (255, 255, 255))
    image.paste(color, (10, 10, 40, 40))
    return image


def image_question(question: str, image: Image.Image | None = None) -> list[ChatMessage]:
    return [ChatMessage("user", (ChatPart.of_image(image or shapes_image()), ChatPart.of_text(question)))]


def long_question(index: int, repeats: int = 40) -> str:
    """A question of several hundred tokens: longer than the test engine's prefill budget."""
    return f"Question {index}: " + "How many red circles and blue squares are in the image? " * repeats


async def seeded_load(engine: Engine, requests: int = 16, seeded_every: int = 4) -> list[object]:
    """Concurrent long-prompt requests, one in `seeded_every` with a seed; results or exceptions."""

    async def one(i: int):
        prompt = engine.render(image_question(long_question(i)), "<SUMMARY>")
        seed = i if i % seeded_every == 0 else None
        return await engine.generate(prompt, SamplingSettings(n=2, max_tokens=16, seed=seed), job_id=f"load-{i}")

    return await asyncio.gather(*(one(i) for i in range(requests)), return_exceptions=True)


def wait_for(predicate, timeout: float = 20.0) -> bool:
    """Poll `predicate` until it holds (True) or `timeout` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False
