"""`llava-o1 eval`: answers read from conclusions and scored right, on hand-made records, and one
real run against the test server."""

from __future__ import annotations

import json
import subprocess

import pytest
from helpers import API_KEY

from bench.evaluate import extract_answer, is_correct, valid_structure

COUNT = {
    "id": "a",
    "answer": "3",
    "kind": "count_color",
    "conversations": [{"from": "human", "value": "<image>\nHow many?"}, {"from": "gpt", "value": "x"}],
}
CHOICE = {
    "id": "b",
    "answer": "C",
    "kind": "compare",
    "options": ["1", "2", "3", "4"],
    "conversations": [
        {"from": "human", "value": "<image>\nWhich?\nA. 1\nB. 2\nC. 3\nD. 4"},
        {"from": "gpt", "value": "<CONCLUSION>C</CONCLUSION>"},
    ],
}
NO_ANSWER_FIELD = {
    "id": "c",
    "conversations": [
        {"from": "human", "value": "Which color?"},
        {"from": "gpt", "value": "<SUMMARY>s</SUMMARY>\n\n<CONCLUSION>The answer is purple.</CONCLUSION>"},
    ],
}


@pytest.mark.parametrize(
    "record, conclusion, right",
    [
        (COUNT, "The answer is 3.", True),
        (COUNT, "3", True),
        (COUNT, "The answer is 4.", False),
        (COUNT, "", False),
        (CHOICE, "C", True),
        (CHOICE, "C. 3", True),
        (CHOICE, "B", False),
        (CHOICE, "the answer is 3", False),  # multiple choice wants the letter
        (NO_ANSWER_FIELD, "Purple", True),
        (NO_ANSWER_FIELD, "red", False),
    ],
)
def test_known_right_and_wrong_answers(record, conclusion, right):
    assert is_correct(record, conclusion) is right


def test_extract_answer():
    assert extract_answer("Answer: B", True) == "B"
    assert extract_answer("The final answer is Green.", False) == "green"


def stage(text, finish="stop"):
    return {
        "name": "X",
        "text": text,
        "winner": 0,
        "steps": [{}],
        "candidates": [{"index": 0, "finish_reason": finish}],
    }


def test_structure_is_valid_only_when_every_stage_was_closed_by_the_model():
    ok = {"finish_reason": "stop", "stages": [stage("a"), stage("b"), stage("c"), stage("d")], "answer_steps": []}
    assert valid_structure(ok)
    assert not valid_structure({**ok, "stages": [stage("a"), stage("b", "length"), stage("c"), stage("d")]})
    assert not valid_structure({**ok, "stages": [stage("a"), stage(" "), stage("c"), stage("d")]})
    assert not valid_structure({**ok, "finish_reason": "length"})


def test_eval_against_the_server_scores_every_question(server, cli_env, tmp_path):
    data = tmp_path / "data"
    subprocess.run(
        ["llava-o1", "synth-data", "--out", str(data), "--n", "40", "--seed", "5"],
        env=cli_env,
        check=True,
        capture_output=True,
    )
    out = tmp_path / "eval.json"
    done = subprocess.run(
        [
            "llava-o1",
            "eval",
            "--data",
            str(data / "test.jsonl"),
            "--url",
            server["base"],
            "--api-key",
            API_KEY,
            "--strategy",
            "stage",
            "--beam-width",
            "2",
            "--temperature",
            "0.6",
            "--max-tokens-per-stage",
            "8",
            "--json-out",
            str(out),
        ],
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "| stage | 2 | 4 |" in done.stdout
    result = json.loads(out.read_text())
    assert result["summary"]["questions"] == 4 and len(result["questions"]) == 4
    # The embedded model is random: it never closes a stage itself within 8 tokens.
    assert result["summary"]["valid_structure"] == 0.0
    assert all(q["completion_tokens"] > 0 and q["judge_tokens"] > 0 for q in result["questions"])
