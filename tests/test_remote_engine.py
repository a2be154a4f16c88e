"""What is particular to the remote engine (`--engine remote`); the engine contract and the search
suites run on it too (the `any_engine` fixture), and tests/test_fleet.py runs the whole topology."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from helpers import SMALL, free_port, image_question, shapes_image, small_server

from models.engine import SamplingSettings
from models.image_digest import image_digest
from models.remote_engine import RemoteEngine

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_an_engine_that_lost_the_image_is_sent_it_again(remote_engine):
    """A search that moved to a replica without its image (the router retried it elsewhere, or the
    image was evicted) names the image by digest, gets "cache miss", and sends it again."""
    image = shapes_image(color=(17, 201, 99))  # an image this server has never seen
    prompt = remote_engine.render(image_question("How many?", image), "<SUMMARY>")
    job = "moved-search"
    # This front end believes the engine holds the image for this search.
    remote_engine._remember_images(job, prompt)
    before = remote_engine.stats()
    result = await remote_engine.generate(prompt, SamplingSettings(n=2, max_tokens=4), job_id=job)
    after = remote_engine.stats()
    assert len(result.candidates) == 2
    assert (after.wire_requests - before.wire_requests, after.wire_image_uploads - before.wire_image_uploads) == (2, 1)
    # Now it does hold it: the next request of the search names it only.
    await remote_engine.generate(prompt, SamplingSettings(n=1, max_tokens=2), job_id=job)
    assert remote_engine.stats().wire_image_uploads == after.wire_image_uploads
    assert image_digest(image) in remote_engine._images_held[job]


class _StandInEngine:
    """A loopback HTTP server that answers a remote engine's health checks, once started."""

    def __init__(self, port: int):
        self.port = port
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: text/plain\r\n\r\nok")
            await writer.drain()
            writer.close()

        self._server = await asyncio.start_server(answer, "127.0.0.1", self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


async def test_a_front_end_waits_out_an_engine_outage_unready_and_serves_again():
    """An engine elsewhere that stops answering makes the front end unready (503, refused with
    engine_unavailable) but alive; once it answers again, the front end is ready again. Exiting
    would bring no engine back."""
    port = free_port()
    engine = RemoteEngine(f"http://127.0.0.1:{port}", "far-away", 4096)
    stand_in = _StandInEngine(port)
    try:
        async with small_server(engine, SMALL) as (app, base), httpx.AsyncClient(base_url=base, timeout=10) as client:
            lifecycle = app.state.llava_o1.lifecycle
            for _ in range(100):
                if lifecycle.engine_down:
                    break
                await asyncio.sleep(0.05)
            health = await client.get("/health")
            assert (health.status_code, health.json()["status"]) == (503, "engine_down")
            assert (await client.get("/live")).status_code == 200
            refused = await client.post("/v1/chat/completions", json={"model": "far-away", "messages": []})
            assert refused.status_code == 503 and refused.json()["error"]["code"] == "engine_unavailable"
            await stand_in.start()
            for _ in range(100):
                if not lifecycle.engine_down:
                    break
                await asyncio.sleep(0.05)
            assert (await client.get("/health")).status_code == 200
            assert not lifecycle.engine_dead, "a remote engine's outage must not end the front end"
    finally:
        await stand_in.stop()
        await engine.shutdown()
