"""The OpenAI-style HTTP API, through a real `llava-o1 serve` subprocess and the official client."""

from __future__ import annotations

import base64
import time

import httpx
import openai
import pytest
from helpers import (
    API_KEY,
    MODEL,
    NO_EOS,
    REASONING,
    STAGES,
    TAGGED,
    data_url,
    extra,
    metric_value,
    question,
    stream_pieces,
    wait_for,
)
from helpers import (
    chat_body as body,
)
from PIL import Image


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server["base"] + "/v1", api_key=API_KEY, max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server["base"], headers={"Authorization": f"Bearer {API_KEY}"}, timeout=120) as c:
        yield c


# -- answers --------------------------------------------------------------------------------------


def test_split_answer_puts_the_conclusion_in_content_and_the_rest_in_reasoning_content(client):
    response = client.chat.completions.create(
        model=MODEL, messages=question(), extra_body={"reasoning": {"beam_width": 3}}
    )
    message = response.choices[0].message
    assert isinstance(message.content, str) and "<" + "CONCLUSION>" not in message.content
    assert REASONING.fullmatch(extra(message, "reasoning_content"))
    assert response.choices[0].finish_reason in ("stop", "length")
    usage = response.usage
    assert usage.prompt_tokens > 0 and usage.completion_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert extra(usage, "judge_tokens") > 0
    assert extra(response, "reasoning")["beam_width"] == 3


def test_tagged_output_is_well_formed(client):
    response = client.chat.completions.create(
        model=MODEL, messages=question(), max_tokens=40, extra_body={"reasoning": {"output": "tagged", "beam_width": 2}}
    )
    assert TAGGED.fullmatch(response.choices[0].message.content)


def test_trace_lists_candidates_and_matches_per_stage(client):
    response = client.chat.completions.create(
        model=MODEL,
        messages=question(),
        seed=3,
        temperature=0.9,
        top_p=0.95,
        extra_body={"reasoning": {"beam_width": 4, "trace": True, "judge": "logprob", "debias": True}},
    )
    trace = extra(response, "reasoning")["trace"]
    assert [s["name"] for s in trace["stages"]] == STAGES
    for stage in trace["stages"]:
        assert len(stage["candidates"]) == 4
        assert len(stage["matches"]) == sum(c["merged_into"] is None for c in stage["candidates"]) - 1
    assert trace["usage"]["judge_tokens"] == extra(response.usage, "judge_tokens")


def test_streamed_stages_arrive_in_order_and_join_into_the_same_structure(client):
    stream = client.chat.completions.create(
        model=MODEL,
        messages=question(),
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"reasoning": {"beam_width": 2}},
    )
    pieces, finish, usage = stream_pieces(stream)
    order = []
    for stage, _, _ in pieces:
        if not order or order[-1] != stage:
            order.append(stage)
    assert order == STAGES
    reasoning = "".join(t for _, f, t in pieces if f == "reasoning_content")
    assert REASONING.fullmatch(reasoning)
    assert all(f == "content" for s, f, _ in pieces if s == "CONCLUSION")
    assert finish in ("stop", "length")
    assert usage.completion_tokens > 0 and extra(usage, "judge_tokens") > 0


def test_streamed_tagged_answer_equals_the_tagged_text(client):
    stream = client.chat.completions.create(
        model=MODEL,
        messages=question(),
        stream=True,
        seed=9,
        extra_body={"reasoning": {"beam_width": 2, "output": "tagged"}},
    )
    pieces, _, _ = stream_pieces(stream)
    assert TAGGED.fullmatch("".join(t for _, _, t in pieces))


def test_beam_width_one_streams_token_by_token(client):
    stream = client.chat.completions.create(
        model=MODEL, messages=question(), stream=True, extra_body={"reasoning": {"beam_width": 1}}
    )
    pieces, _, _ = stream_pieces(stream)
    summary_pieces = [t for s, _, t in pieces if s == "SUMMARY"]
    # The opening tag, several text pieces, the closing tag.
    assert len(summary_pieces) > 3


async def test_async_client_plain_and_streaming(server):
    client = openai.AsyncOpenAI(base_url=server["base"] + "/v1", api_key=API_KEY, max_retries=0)
    response = await client.chat.completions.create(
        model=MODEL, messages=question(), extra_body={"reasoning": {"beam_width": 2}}
    )
    assert REASONING.fullmatch(extra(response.choices[0].message, "reasoning_content"))
    stream = await client.chat.completions.create(
        model=MODEL, messages=question(), stream=True, extra_body={"reasoning": {"beam_width": 2}}
    )
    stages = [extra(c.choices[0].delta, "stage") async for c in stream if c.choices]
    assert [s for i, s in enumerate(stages) if s and s not in stages[:i]] == STAGES
    await client.close()


@pytest.mark.parametrize("strategy", ["stage", "sentence", "best_of_n", "majority", "none"])
def test_every_strategy_answers(client, strategy):
    response = client.chat.completions.create(
        model=MODEL,
        messages=question(),
        max_tokens=48,
        extra_body={"reasoning": {"strategy": strategy, "beam_width": 2, "output": "tagged"}},
    )
    assert TAGGED.fullmatch(response.choices[0].message.content)
    assert extra(response, "reasoning")["strategy"] == strategy


def test_remote_image_from_an_allowed_host_reaches_the_prompt(client, image_host):
    def first_prompt_tokens(messages) -> int:
        response = client.chat.completions.create(
            model=MODEL, messages=messages, extra_body={"reasoning": {"beam_width": 1, "trace": True}}
        )
        return extra(response, "reasoning")["trace"]["stages"][0]["steps"][0]["prompt_tokens"]

    with_image = first_prompt_tokens(question("How many?", f"http://{image_host}/shapes.png"))
    without_image = first_prompt_tokens([{"role": "user", "content": "How many?"}])
    # The first stage's prompt differs only by the image: its placeholder tokens are there.
    assert with_image > without_image


def test_meta_endpoints(client, http, server):
    assert [m.id for m in client.models.list().data] == [MODEL]
    health = httpx.get(server["base"] + "/health")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    assert http.get("/version").json()["model"] == MODEL
    assert "/v1/chat/completions" in http.get("/openapi.json").json()["paths"]


# -- errors ---------------------------------------------------------------------------------------


def bomb_url() -> str:
    return data_url(Image.new("L", (4000, 4000)))  # 16M pixels, a few KB of PNG


FIRST_IMAGE = "messages[0].content[0].image_url"  # the param named when the first image is refused
ERROR_CASES = {
    "malformed_json": (dict(content=b'{"model": "llava-o1-tiny", "messages": [}'), 400, None),
    "wrong_model": (dict(json=body(model="gpt-4o")), 404, "model"),
    "no_user_message": (dict(json=body(messages=[{"role": "system", "content": "hi"}])), 400, "messages"),
    "no_text": (
        dict(
            json=body(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": data_url()}}]}])
        ),
        400,
        "messages",
    ),
    "empty_messages": (dict(json=body(messages=[])), 400, "messages"),
    "invalid_base64": (
        dict(json=body(messages=question("q", "data:image/png;base64,@@notbase64@@"))),
        400,
        FIRST_IMAGE,
    ),
    "not_an_image": (
        dict(
            json=body(
                messages=question("q", "data:image/png;base64," + base64.b64encode(b"hello, not a picture").decode())
            )
        ),
        400,
        FIRST_IMAGE,
    ),
    "pixel_bomb": (dict(json=body(messages=question("q", "BOMB"))), 400, FIRST_IMAGE),
    "too_many_images": (
        dict(json=body(messages=question("q", data_url(), data_url(), data_url()))),
        400,
        "messages",
    ),
    "body_too_large": (dict(content=b'{"model": "' + b"x" * 2_100_000 + b'"}'), 413, None),
    "prompt_too_long": (dict(json=body(messages=question("word " * 5000))), 400, "messages"),
    # About a million characters: vLLM refuses it on its length in characters, before tokenizing.
    "prompt_far_too_long": (dict(json=body(messages=question("word " * 200_000))), 400, "messages"),
    "beam_width_too_big": (dict(json=body(reasoning={"beam_width": 7})), 400, "reasoning.beam_width"),
    "beam_width_zero": (dict(json=body(reasoning={"beam_width": 0})), 400, "reasoning.beam_width"),
    "unknown_strategy": (dict(json=body(reasoning={"strategy": "mcts"})), 400, "reasoning.strategy"),
    "unsupported_field": (dict(json=body(tools=[{"type": "function"}])), 400, "tools"),
    "unknown_field": (dict(json=body(frobnicate=True)), 400, "frobnicate"),
    "n_above_max": (dict(json=body(n=9)), 400, "n"),
    "audio_modality": (dict(json=body(modalities=["text", "audio"])), 400, "modalities.1"),
    "top_logprobs_without_logprobs": (dict(json=body(top_logprobs=2)), 400, "top_logprobs"),
    "too_many_top_logprobs": (dict(json=body(logprobs=True, top_logprobs=21)), 400, "top_logprobs"),
    "logit_bias_not_a_token_id": (dict(json=body(logit_bias={"cat": 5})), 400, "logit_bias"),
    "logit_bias_out_of_vocabulary": (dict(json=body(logit_bias={"99999999": 5})), 400, "logit_bias"),
    "five_stop_strings": (dict(json=body(stop=["a", "b", "c", "d", "e"])), 400, "stop"),
    "json_with_whole_answers": (
        dict(json=body(response_format={"type": "json_object"}, reasoning={"strategy": "best_of_n", "beam_width": 2})),
        400,
        "response_format",
    ),
    "logprobs_with_sentences": (
        dict(json=body(logprobs=True, reasoning={"strategy": "sentence", "beam_width": 2})),
        400,
        "logprobs",
    ),
    "bad_reasoning_effort": (dict(json=body(reasoning_effort="extreme")), 400, "reasoning_effort"),
    "bad_json_schema": (
        dict(json=body(response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": 5}}})),
        400,
        "response_format",
    ),
    "max_tokens_below_stages": (dict(json=body(max_tokens=2)), 400, "max_tokens"),
    "bad_temperature": (dict(json=body(temperature=5)), 400, "temperature"),
    "remote_loopback": (dict(json=body(messages=question("q", "http://127.0.0.1:9/x.png"))), 400, FIRST_IMAGE),
    "remote_localhost_name": (
        dict(json=body(messages=question("q", "http://localhost:1/x.png"))),
        400,
        FIRST_IMAGE,
    ),
    "remote_link_local": (
        dict(json=body(messages=question("q", "http://169.254.169.254/latest"))),
        400,
        FIRST_IMAGE,
    ),
    "remote_too_large": (dict(json=body(messages=question("q", "http://IMAGE_HOST/big.png"))), 400, FIRST_IMAGE),
    "remote_too_slow": (dict(json=body(messages=question("q", "http://IMAGE_HOST/slow.png"))), 400, FIRST_IMAGE),
    "bad_url_scheme": (dict(json=body(messages=question("q", "file:///etc/passwd"))), 400, FIRST_IMAGE),
}


def resolve(kwargs: dict, image_host: str) -> dict:
    if "json" in kwargs:
        text = str(kwargs["json"])
        if "BOMB" in text or "IMAGE_HOST" in text:
            import json

            raw = json.dumps(kwargs["json"]).replace("BOMB", bomb_url()).replace("IMAGE_HOST", image_host)
            return {"content": raw.encode(), "headers": {"Content-Type": "application/json"}}
    if "content" in kwargs:
        return {**kwargs, "headers": {"Content-Type": "application/json"}}
    return kwargs


def assert_still_serving(http):
    ok = http.post("/v1/chat/completions", json=body())
    assert ok.status_code == 200, ok.text


@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_bad_input_gets_a_4xx_in_the_openai_error_shape(http, image_host, case):
    kwargs, status, param = ERROR_CASES[case]
    response = http.post("/v1/chat/completions", **resolve(kwargs, image_host))
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"] and error["type"]
    if param is not None:
        assert error["param"] == param, error
    assert_still_serving(http)


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic abc"}])
def test_api_key_is_required(server, http, headers):
    response = httpx.post(server["base"] + "/v1/chat/completions", json=body(), headers=headers)
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "authentication_error"
    assert httpx.get(server["base"] + "/v1/models", headers=headers).status_code == 401
    assert_still_serving(http)


def test_unknown_route_is_a_404_in_the_error_shape(http):
    response = http.get("/v1/nothing")
    assert response.status_code == 404
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "not_found_error" and error["message"]


# -- cancellation ---------------------------------------------------------------------------------


def running_requests(server) -> int:
    return httpx.get(server["base"] + "/health").json()["running_requests"]


# With NO_EOS every stage runs to the context's end: 5 to 9 s here beside a training run, and in CI
# on a quiet fast machine under 1.5 s. No fixed wait fits every machine, so the plain client below
# times one whole search first and leaves a third of the way into the next.
LONG_SEARCH = {"beam_width": 6, "max_tokens_per_stage": 2000}


def seconds_of_one_long_search(server) -> float:
    payload = body(reasoning=LONG_SEARCH, max_tokens=None, **NO_EOS)
    started = time.monotonic()
    response = httpx.post(
        server["base"] + "/v1/chat/completions",
        json=payload,
        timeout=300,
        headers={"Authorization": f"Bearer {API_KEY}"},
    )
    assert response.status_code == 200, response.text
    return time.monotonic() - started


def test_a_streaming_client_that_disconnects_leaves_no_engine_work(server):
    payload = body(stream=True, reasoning=LONG_SEARCH, max_tokens=None, **NO_EOS)
    cancelled = cancelled_requests(server)
    with (
        httpx.Client(timeout=60) as c,
        c.stream(
            "POST",
            server["base"] + "/v1/chat/completions",
            json=payload,
            headers={"Authorization": f"Bearer {API_KEY}"},
        ) as response,
    ):
        assert response.status_code == 200
        lines = (line for line in response.iter_lines() if line)
        assert next(lines).startswith("data: ")  # the role chunk
        # The first stage's opening tag: the search is under way.
        assert any('"stage":' in line for line in lines), "the stream ended before its first stage"
        # leaving the block closes the connection mid-search
    # The server counts the request as one its client left: it was still being served. (Counted
    # afterwards: a scrape of this busy 2-core server can come back seconds late, so the in-flight
    # gauge read "now" could show a search that had ended meanwhile as never served.)
    assert wait_for(lambda: cancelled_requests(server) > cancelled), "the search had ended before the client left"
    # The search had seconds to go: left running, it would outlast this.
    assert wait_for(lambda: running_requests(server) == 0, timeout=5), "engine work kept running after the client left"


def cancelled_requests(server) -> float:
    """Chat requests whose client left before their answer was sent (the server's own count)."""
    return metric_value(server["base"], "llava_o1_requests_total", outcome="cancelled")


def test_a_plain_client_that_disconnects_leaves_no_engine_work(server):
    leave_after_s = seconds_of_one_long_search(server) / 3
    payload = body(reasoning=LONG_SEARCH, max_tokens=None, **NO_EOS)
    cancelled = cancelled_requests(server)
    with pytest.raises(httpx.TimeoutException):
        response = httpx.post(
            server["base"] + "/v1/chat/completions",
            json=payload,
            timeout=leave_after_s,
            headers={"Authorization": f"Bearer {API_KEY}"},
        )
        pytest.fail(f"answered within {leave_after_s:.2f} s: {response.status_code} {response.text[:300]}")
    assert wait_for(lambda: cancelled_requests(server) > cancelled), "the server never saw the client leave"
    # The search had seconds to go: left running, it would outlast this.
    assert wait_for(lambda: running_requests(server) == 0, timeout=5), "engine work kept running after the client left"


async def test_seeded_requests_under_concurrent_load_never_kill_the_engine(server):
    import asyncio

    long_text = "How many red circles and blue squares are in the image? " * 20  # 16 x ~400 tokens: chunked prefill
    async with httpx.AsyncClient(
        base_url=server["base"], timeout=180, headers={"Authorization": f"Bearer {API_KEY}"}
    ) as c:

        async def one(i):
            return await c.post(
                "/v1/chat/completions",
                json=body(
                    messages=question(f"{i}: {long_text}"),
                    seed=i if i % 4 == 0 else None,
                    reasoning={"beam_width": 2},
                    max_tokens=16,
                ),
            )

        responses = await asyncio.gather(*(one(i) for i in range(16)))
    assert [r.status_code for r in responses] == [200] * 16
    assert httpx.get(server["base"] + "/health").status_code == 200


def test_temperature_zero_with_a_beam_is_answered(client):
    # Evaluation harnesses send temperature 0 by default; the beam's candidates are then all equal.
    response = client.chat.completions.create(
        model=MODEL, messages=question(), temperature=0, extra_body={"reasoning": {"beam_width": 3, "trace": True}}
    )
    trace = extra(response, "reasoning")["trace"]
    assert all(len({c["text"] for c in stage["candidates"]}) == 1 for stage in trace["stages"])
    assert all(not stage["matches"] for stage in trace["stages"])  # equal candidates need no judge


@pytest.mark.parametrize(
    ("refusal", "status", "param", "code"),
    [
        (
            dict(message="This model's maximum context length is 4096 tokens.", parameter="input_text"),
            400,
            "messages",
            "context_length_exceeded",
        ),
        (
            dict(message="The decoder prompt (length 5000) is longer than the maximum model length of 4096."),
            400,
            "messages",
            "context_length_exceeded",
        ),
        (
            dict(message="max_tokens must be at least 1, got 0.", parameter="max_tokens"),
            400,
            "max_tokens",
            "invalid_value",
        ),
        (dict(message="At most 1 image(s) may be provided in one prompt."), 400, "messages", "invalid_value"),
    ],
)
def test_every_vllm_validation_error_is_a_400_naming_the_field(refusal, status, param, code):
    """vLLM's whole client-error class is mapped once, whatever check raised it."""
    from vllm.exceptions import VLLMValidationError

    from models.vllm_refusals import vllm_refusal
    from server.errors import search_error

    exc = VLLMValidationError(refusal.pop("message"), **refusal)
    error = search_error(vllm_refusal(str(exc), exc.parameter), 60)
    assert error is not None and (error.status, error.param, error.code) == (status, param, code)
