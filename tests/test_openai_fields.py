"""Every applied OpenAI (and vLLM) request field shows its effect, through the real server and the
official client; the accepted-without-effect fields are accepted; reasoning accounting adds up."""

from __future__ import annotations

import json
from dataclasses import replace

import httpx
import jsonschema
import openai
import pytest
from helpers import API_KEY, MODEL, NO_EOS, SMALL, STAGES, extra, payload, question, small_server
from transformers import AutoTokenizer

# Greedy, one sample per stage: the same request gives the same answer, so a field's effect is
# the difference between two answers.
GREEDY = {"reasoning": {"beam_width": 1}}


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server["base"] + "/v1", api_key=API_KEY, max_retries=0, timeout=120)


def ask(client, **fields):
    extra_body = fields.pop("extra_body", GREEDY)
    return client.chat.completions.create(model=MODEL, messages=question(), extra_body=extra_body, **fields)


def conclusion(response, index: int = 0) -> str:
    return response.choices[index].message.content


# -- stop -----------------------------------------------------------------------------------------


def test_stop_cuts_the_final_stage_and_leaves_the_reasoning(client):
    # Seeded sampling: varied text (greedy text from the random model repeats one token), and the
    # same text up to the stop string in both requests.
    whole = ask(client, max_tokens=60, temperature=1.0, seed=7)
    answer = conclusion(whole)
    assert len(answer) > 6, answer
    stop = answer[len(answer) // 2 : len(answer) // 2 + 3]
    cut = ask(client, max_tokens=60, temperature=1.0, seed=7, stop=[stop])
    assert conclusion(cut) == answer[: answer.index(stop)].strip()
    assert cut.choices[0].finish_reason == "stop"
    # Stop strings belong to the answer; the stages' text is untouched.
    assert extra(cut.choices[0].message, "reasoning_content") == extra(whole.choices[0].message, "reasoning_content")


# -- n --------------------------------------------------------------------------------------------


def test_n_returns_that_many_independent_choices(client):
    response = ask(client, n=3, seed=5, max_tokens=40, extra_body={"reasoning": {"beam_width": 2}})
    assert [c.index for c in response.choices] == [0, 1, 2]
    answers = [extra(c.message, "reasoning_content") + c.message.content for c in response.choices]
    assert len(set(answers)) == 3, "seeded choices must differ from one another"
    single = ask(client, seed=5, max_tokens=40, extra_body={"reasoning": {"beam_width": 2}})
    assert single.choices[0].message.content == response.choices[0].message.content, "choice 0 keeps the seed"
    assert response.usage.completion_tokens > 2 * single.usage.completion_tokens, "usage counts every choice"


def test_n_streams_every_choice(client):
    stream = ask(
        client, n=2, max_tokens=24, stream=True, extra_body={"reasoning": {"beam_width": 2, "output": "tagged"}}
    )
    finished, stages = set(), {0: [], 1: []}
    for chunk in stream:
        for choice in chunk.choices:
            if choice.finish_reason:
                finished.add(choice.index)
            stage = extra(choice.delta, "stage")
            if stage and stage not in stages[choice.index]:
                stages[choice.index].append(stage)
    assert finished == {0, 1}
    assert stages == {0: STAGES, 1: STAGES}


# -- reasoning_effort -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("effort", "strategy", "beam_width"),
    [("minimal", "none", 1), ("low", "stage", 2), ("medium", "stage", 4), ("high", "stage", 6)],  # 8, capped at 6
)
def test_reasoning_effort_is_the_official_clients_own_keyword(client, effort, strategy, beam_width):
    response = client.chat.completions.create(model=MODEL, messages=question(), max_tokens=16, reasoning_effort=effort)
    reasoning = extra(response, "reasoning")
    assert (reasoning["strategy"], reasoning["beam_width"], reasoning["effort"]) == (strategy, beam_width, effort)


def test_the_reasoning_object_wins_over_reasoning_effort(client):
    response = ask(client, max_tokens=16, reasoning_effort="high", extra_body={"reasoning": {"beam_width": 3}})
    assert extra(response, "reasoning")["beam_width"] == 3


# -- response_format ------------------------------------------------------------------------------

COLOR_SCHEMA = {
    "type": "object",
    "properties": {"color": {"type": "string", "enum": ["red", "green", "blue"]}, "big": {"type": "boolean"}},
    "required": ["color", "big"],
    "additionalProperties": False,
}
ROOMY = {"max_tokens_per_stage": 40}  # room for the whole JSON in the final stage


@pytest.mark.parametrize("beam_width", [1, 3])
def test_json_schema_makes_the_conclusion_parse_against_the_schema(client, beam_width):
    response = ask(
        client,
        max_tokens=200,
        response_format={"type": "json_schema", "json_schema": {"name": "shapes", "schema": COLOR_SCHEMA}},
        extra_body={"reasoning": {"beam_width": beam_width, **ROOMY}},
    )
    jsonschema.validate(json.loads(conclusion(response)), COLOR_SCHEMA)
    assert extra(response.choices[0].message, "reasoning_content").startswith("<SUMMARY>")


def test_json_object_makes_the_conclusion_a_json_object(client, tiny_model_dir):
    """The random model never closes a string by chance; a bias toward "}" lets it finish. The same
    bias without the format writes "}}}}...": the format is what makes it JSON."""
    brace = AutoTokenizer.from_pretrained(tiny_model_dir).encode("}", add_special_tokens=False)[-1]
    fields = {
        "max_tokens": 200,
        "logit_bias": {str(brace): 50},
        "extra_body": {"reasoning": {"beam_width": 1, **ROOMY}},
    }
    formatted = conclusion(ask(client, response_format={"type": "json_object"}, **fields))
    assert isinstance(json.loads(formatted), dict)
    with pytest.raises(json.JSONDecodeError):
        json.loads(conclusion(ask(client, **fields)))


def test_response_format_text_is_the_default(client):
    assert conclusion(ask(client, max_tokens=40, response_format={"type": "text"})) == conclusion(
        ask(client, max_tokens=40)
    )


# -- logprobs -------------------------------------------------------------------------------------


def test_logprobs_are_the_final_stages_tokens(client):
    response = ask(client, max_tokens=100, logprobs=True, top_logprobs=3)
    tokens = response.choices[0].logprobs.content
    assert tokens, "no log-probabilities"
    assert "".join(t.token for t in tokens).strip().startswith(conclusion(response))
    for token in tokens:
        assert token.logprob <= 0 and bytes(token.bytes) == token.token.encode()
        assert len(token.top_logprobs) == 3
        ranked = [alt.logprob for alt in token.top_logprobs]
        assert ranked == sorted(ranked, reverse=True) and token.logprob <= ranked[0] + 1e-6
    assert ask(client, max_tokens=100).choices[0].logprobs is None


def test_streamed_logprobs_arrive_with_the_finish_chunk(client):
    chunks = list(ask(client, max_tokens=100, logprobs=True, stream=True))
    finish = next(c for c in chunks if c.choices and c.choices[0].finish_reason)
    assert finish.choices[0].logprobs.content
    assert all(c.choices[0].logprobs is None for c in chunks if c.choices and not c.choices[0].finish_reason)


# -- sampling controls ----------------------------------------------------------------------------


@pytest.mark.parametrize("control", [{"top_k": 1}, {"min_p": 1.0}])
def test_top_k_1_and_min_p_1_sample_the_most_likely_token(client, control):
    """At temperature 1 two seeds differ; keeping only the most likely token makes them greedy."""

    def sampled(seed: int, **fields):
        return ask(client, max_tokens=40, temperature=1.0, seed=seed, **fields).choices[0].message.content

    assert sampled(1) != sampled(2)
    kept = {sampled(seed, extra_body={**GREEDY, **control}) for seed in (1, 2)}
    assert kept == {conclusion(ask(client, max_tokens=40))}


@pytest.mark.parametrize(
    "control",
    [{"presence_penalty": 2.0}, {"frequency_penalty": 2.0}, {"extra_body": {**GREEDY, "repetition_penalty": 2.0}}],
)
def test_penalties_change_what_greedy_decoding_repeats(client, control):
    plain = ask(client, max_tokens=60)
    penalized = ask(client, max_tokens=60, **control)
    assert conclusion(penalized) != conclusion(plain) or extra(penalized.choices[0].message, "reasoning_content") != (
        extra(plain.choices[0].message, "reasoning_content")
    )


def test_logit_bias_forces_a_token(client, tiny_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    token_id = tokenizer.encode(" blue", add_special_tokens=False)[-1]
    word = tokenizer.decode([token_id])
    response = ask(client, max_tokens=40, logit_bias={str(token_id): 100})
    answer = conclusion(response)
    assert answer and answer.replace(word.strip(), "").strip() == "", answer


def test_logit_bias_reaches_every_candidate_of_every_stage(client, tiny_model_dir):
    """Banning EOS makes every candidate sample its whole budget, which the tests that need a long
    search rely on (helpers.NO_EOS)."""
    assert NO_EOS["logit_bias"] == {str(AutoTokenizer.from_pretrained(tiny_model_dir).eos_token_id): -100}
    beams, per_stage = 3, 24
    reasoning = {"beam_width": beams, "max_tokens_per_stage": per_stage}
    response = ask(client, extra_body={"reasoning": reasoning}, seed=3, **NO_EOS)
    assert response.usage.completion_tokens == beams * per_stage * len(STAGES)


# -- fields accepted without effect ---------------------------------------------------------------


def test_fields_clients_send_by_default_are_accepted(client):
    plain = conclusion(ask(client, max_tokens=24))
    response = ask(
        client,
        max_tokens=24,
        user="someone",
        metadata={"team": "vision"},
        store=False,
        service_tier="auto",
        parallel_tool_calls=True,
        prompt_cache_key="k",
        safety_identifier="s",
        modalities=["text"],
        logprobs=False,
    )
    assert conclusion(response) == plain


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("tools", [{"type": "function", "function": {"name": "f"}}]),
        ("tool_choice", "auto"),
        ("functions", [{"name": "f"}]),
        ("audio", {"voice": "alloy", "format": "wav"}),
        ("web_search_options", {}),
    ],
)
def test_fields_that_cannot_be_honoured_are_refused_by_name(server, field, value):
    body = {"model": MODEL, "messages": question(), field: value}
    response = httpx.post(
        server["base"] + "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {API_KEY}"}
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == field and "not supported" in error["message"], error


# -- reasoning accounting -------------------------------------------------------------------------


def test_reasoning_tokens_count_the_chosen_stages_before_the_conclusion(client):
    response = ask(client, max_tokens=64, extra_body={"reasoning": {"beam_width": 3, "trace": True}})
    trace = extra(response, "reasoning")["trace"]
    chosen = [stage["candidates"][stage["winner"]]["tokens"] for stage in trace["stages"]]
    usage = response.usage
    assert usage.completion_tokens_details.reasoning_tokens == sum(chosen[:-1])
    assert extra(usage, "search_tokens") == usage.completion_tokens + extra(usage, "judge_tokens")
    message = response.choices[0].message
    assert extra(message, "reasoning") == extra(message, "reasoning_content")


def test_stream_deltas_carry_reasoning_under_both_names(client):
    seen = []
    for chunk in ask(client, max_tokens=24, stream=True):
        for choice in chunk.choices:
            if extra(choice.delta, "reasoning_content") is not None:
                seen.append(extra(choice.delta, "reasoning") == extra(choice.delta, "reasoning_content"))
    assert seen and all(seen)


# -- streaming keep-alives ------------------------------------------------------------------------


@pytest.mark.asyncio(loop_scope="session")
async def test_a_thinking_stream_sends_its_role_at_once_then_keepalive_comments(engine, image_url):
    settings = replace(SMALL, sse_keepalive_s=0.05)
    request = {**payload(image_url, beam_width=4, max_tokens_per_stage=200), **NO_EOS}
    request.update(model=engine.model_name, stream=True)
    async with (
        small_server(engine, settings) as (_, base),
        httpx.AsyncClient(base_url=base, timeout=120) as http,
        http.stream("POST", "/v1/chat/completions", json=request) as response,
    ):
        lines = [line async for line in response.aiter_lines() if line]
    assert lines[0].startswith("data: ") and json.loads(lines[0][6:])["choices"][0]["delta"]["role"] == "assistant"
    assert ": keep-alive" in lines, "a stage sampled for seconds sent no keep-alive"
    assert lines[-1] == "data: [DONE]" and not any('"error"' in line for line in lines)
