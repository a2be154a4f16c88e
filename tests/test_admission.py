"""Admission control and load-adaptive beam width: unit tests, then under real overload on loopback."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from helpers import NO_EOS, payload, small_server

from server.admission import AdmissionController
from server.errors import APIError

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_slots_then_queue_then_429():
    controller = AdmissionController(max_concurrent=1, max_queue=1)
    gate = asyncio.Event()

    async def hold():
        async with controller.slot():
            await gate.wait()

    first = asyncio.create_task(hold())
    await asyncio.sleep(0)
    second = asyncio.create_task(hold())
    await asyncio.sleep(0)
    assert (controller.active, controller.queued) == (1, 1)
    with pytest.raises(APIError) as refused:
        async with controller.slot():
            pass
    assert refused.value.status == 429 and "Retry-After" in refused.value.headers
    gate.set()
    await asyncio.gather(first, second)
    assert (controller.active, controller.queued) == (0, 0)


async def test_auto_beam_width_shrinks_as_the_queue_fills():
    controller = AdmissionController(max_concurrent=2, max_queue=4)
    widths = []
    for queued in range(5):
        controller.queued = queued
        widths.append(controller.auto_beam_width(8))
    assert widths == [8, 6, 4, 2, 1]


# -- a real server on loopback, sharing the session engine ----------------------------------------


async def test_overload_ends_every_request_in_success_429_or_504(engine, image_url):
    async with small_server(engine) as (app, base):
        body = payload(image_url, beam_width=4, max_tokens_per_stage=64, timeout=20)
        body["model"] = engine.model_name
        # 4x more clients than slots + queue; each makes a bounded number of requests.
        async with httpx.AsyncClient(base_url=base, timeout=60) as client:

            async def one(i):
                response = await client.post("/v1/chat/completions", json={**body, "seed": i if i % 4 == 0 else None})
                return response

            responses = await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(24))), timeout=240)
            statuses = [r.status_code for r in responses]
            assert set(statuses) <= {200, 429, 504}, statuses
            assert 200 in statuses and 429 in statuses
            for response in responses:
                if response.status_code != 200:
                    error = response.json()["error"]
                    assert set(error) == {"message", "type", "param", "code"}
                if response.status_code == 429:
                    assert int(response.headers["Retry-After"]) >= 1
            state = app.state.llava_o1
            assert (state.admission.active, state.admission.queued) == (0, 0)
            assert engine.num_unfinished_requests() == 0
            assert await engine.is_healthy()
            after = await client.post("/v1/chat/completions", json={**body, "reasoning": {"beam_width": 1}})
            assert after.status_code == 200
            metrics = (await client.get("/metrics")).text
            assert 'outcome="rejected"' in metrics


async def test_deadline_gives_504_and_stops_the_engine_work(engine, image_url):
    async with small_server(engine) as (_app, base):
        body = {**payload(image_url, beam_width=4, max_tokens_per_stage=3000, timeout=1.0), **NO_EOS}
        body["model"] = engine.model_name
        async with httpx.AsyncClient(base_url=base, timeout=60) as client:
            response = await client.post("/v1/chat/completions", json=body)
            assert response.status_code == 504
            assert response.json()["error"]["code"] == "timeout"
            for _ in range(100):
                if engine.num_unfinished_requests() == 0:
                    break
                await asyncio.sleep(0.05)
            assert engine.num_unfinished_requests() == 0
            stream = await client.post("/v1/chat/completions", json={**body, "stream": True})
            assert stream.status_code == 200
            events = [line.removeprefix("data: ") for line in stream.text.splitlines() if line.startswith("data: ")]
            assert events[-1] == "[DONE]"
            assert json.loads(events[-2])["error"]["code"] == "timeout"


async def test_auto_beam_width_shrinks_as_the_queue_grows_and_is_reported(engine, image_url):
    async with small_server(engine) as (app, base):
        admission = app.state.llava_o1.admission
        long = {**payload(image_url, beam_width=1, max_tokens_per_stage=400), **NO_EOS}
        auto = payload(image_url, beam_width="auto")
        long["model"] = auto["model"] = engine.model_name
        async with httpx.AsyncClient(base_url=base, timeout=120) as client:
            blockers = [asyncio.create_task(client.post("/v1/chat/completions", json=long)) for _ in range(2)]
            while admission.active < 2:
                await asyncio.sleep(0.01)
            waiting = []
            for expected_queue in range(4):
                waiting.append(asyncio.create_task(client.post("/v1/chat/completions", json=auto)))
                while admission.queued < expected_queue + 1:
                    await asyncio.sleep(0.01)
            responses = await asyncio.gather(*blockers, *waiting)
        widths = [r.json()["reasoning"]["beam_width"] for r in responses[2:]]
        assert widths == [4, 3, 2, 1]
