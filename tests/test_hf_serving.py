"""`llava-o1 serve --engine hf`: the tiny Mllama served through transformers, asked with the official client."""

from __future__ import annotations

import openai
import pytest
from helpers import API_KEY, REASONING, STAGES, TAGGED, extra, question, stream_pieces

MODEL = "tiny-mllama"


@pytest.fixture(scope="module")
def hf_client(hf_server):
    return openai.OpenAI(base_url=hf_server["base"] + "/v1", api_key=API_KEY, max_retries=0, timeout=120)


def test_the_hf_server_lists_its_model_and_logs_its_engine(hf_client, hf_server):
    assert [m.id for m in hf_client.models.list().data] == [MODEL]
    assert "hf engine for" in hf_server["log"].read_text()


def test_stage_search_answer_on_the_hf_engine(hf_client):
    response = hf_client.chat.completions.create(
        model=MODEL, messages=question(), seed=3, extra_body={"reasoning": {"beam_width": 3}}
    )
    message = response.choices[0].message
    assert REASONING.fullmatch(extra(message, "reasoning_content"))
    assert isinstance(message.content, str)
    assert response.usage.completion_tokens > 0 and extra(response.usage, "judge_tokens") > 0
    assert extra(response, "reasoning")["beam_width"] == 3


def test_streamed_stages_on_the_hf_engine(hf_client):
    stream = hf_client.chat.completions.create(
        model=MODEL,
        messages=question(),
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"reasoning": {"beam_width": 2, "output": "tagged"}},
    )
    pieces, finish, usage = stream_pieces(stream)
    assert [s for i, (s, _, _) in enumerate(pieces) if i == 0 or pieces[i - 1][0] != s] == STAGES
    assert TAGGED.fullmatch("".join(t for _, _, t in pieces))
    assert finish in ("stop", "length") and usage.completion_tokens > 0


@pytest.mark.parametrize(
    ("fields", "param"),
    [({"extra_body": {"top_k": 5}}, "top_k"), ({"logprobs": True}, "top_logprobs"), ({"stop": ["x"]}, None)],
)
def test_sampling_controls_the_hf_engine_lacks_are_refused_by_name(hf_client, fields, param):
    """Its sampler is its own (temperature, top-p, seed, stop strings); vLLM's extras are a 400."""
    if param is None:  # stop strings it has: accepted
        assert hf_client.chat.completions.create(model=MODEL, messages=question(), max_tokens=12, **fields)
        return
    with pytest.raises(openai.BadRequestError) as refused:
        hf_client.chat.completions.create(model=MODEL, messages=question(), max_tokens=12, **fields)
    error = refused.value.body
    assert error["param"] == param and "hf engine" in error["message"], error
