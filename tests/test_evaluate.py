"""`llava-o1 eval`: answers read from conclusions and scored right, on hand-made records, and one
real run against the test server."""

from __future__ import annotations

import json
import re
import subprocess

import pytest
from helpers import API_KEY, run_cli

from bench.evaluate import valid_structure
from training.labels import extract_answer, is_correct

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
    assert "| stage | 2 | self (pairwise) | 4 |" in done.stdout
    result = json.loads(out.read_text())
    assert result["summary"]["questions"] == 4 and len(result["questions"]) == 4
    # The embedded model is random: it never closes a stage itself within 8 tokens.
    assert result["summary"]["valid_structure"] == 0.0
    assert all(q["completion_tokens"] > 0 and q["judge_tokens"] > 0 for q in result["questions"])


def test_table_mode_scores_every_strategy_at_every_width(cli_env, tmp_path):
    """The demo model in process, five strategies, widths 1 and 2: one table, JSON and a plot."""
    run_cli(cli_env, "synth-data", "--out", str(tmp_path / "data"), "--n", "6", "--seed", "8", "--test-fraction", "0")
    out, png = tmp_path / "table.json", tmp_path / "table.png"
    done = run_cli(
        cli_env,
        "eval",
        "--data",
        str(tmp_path / "data" / "train.jsonl"),
        "--strategies",
        "none,majority,best_of_n,sentence,stage,swires",
        "--beam-widths",
        "2,3",
        "--search-seed",
        "4",
        "--json-out",
        str(out),
        "--plot-out",
        str(png),
    )
    cells = [(s, w) for s in ("majority", "best_of_n", "sentence", "stage") for w in (2, 3)]
    for strategy, width in [("none", 1), *cells, ("swires", "-")]:
        assert re.search(rf"\| {strategy} \| {width} \| [^|]+ \| 6 \|", done.stdout), (strategy, width)
    result = json.loads(out.read_text())
    summaries = {(s["strategy"], s["beam_width"]): s for s in result["summaries"]}
    assert set(summaries) == {("none", 1), *cells, ("swires", 4)}
    assert set(result["questions"]) == {f"{s}@{w}" for s, w in summaries}
    assert png.read_bytes().startswith(b"\x89PNG")
    for (strategy, width), summary in summaries.items():
        # The answer kept is one of the candidates, so the oracle is never below the accuracy.
        if strategy != "sentence":
            assert summary["oracle"] >= summary["accuracy"], (strategy, width)
        assert summary["tokens_per_question"] > 0
        for judged in summary["judge_accuracy"].values():
            assert judged["matches"] > 0 and 0.0 <= judged["accuracy"] <= 1.0
    assert summaries[("none", 1)]["oracle"] == summaries[("none", 1)]["accuracy"]
    assert summaries[("none", 1)]["judge_tokens_per_question"] == 0
    assert summaries[("sentence", 2)]["oracle"] is None
    # At width 2 or more the search samples at the default search temperature: candidates differ.
    assert any(q["judge_tokens"] > 0 for q in result["questions"]["stage@3"])


def test_files_are_pooled_without_mixing_up_their_questions(demo_server, cli_env, tmp_path):
    """Two sets whose ids repeat (both start at shapes-000000): greedy answers per file are what
    each file alone gets, and accuracy is also reported per file. The demo model answers (its
    answers differ from question to question); one server serves the three runs."""
    files = []
    for seed in (8, 13):
        run_cli(cli_env, "synth-data", "--out", str(tmp_path / f"s{seed}"), "--n", "5", "--seed", str(seed),
                "--test-fraction", "0")  # fmt: skip
        files.append(str(tmp_path / f"s{seed}" / "train.jsonl"))
    base = demo_server["base"]

    def conclusions(*data: str) -> tuple[list[str], dict]:
        out = tmp_path / "eval.json"
        run_cli(cli_env, "eval", "--data", *data, "--url", base, "--api-key", API_KEY, "--concurrency", "1",
                "--json-out", str(out))  # fmt: skip
        result = json.loads(out.read_text())
        return [q["conclusion"] for q in result["questions"]], result["summary"]["by_data"]

    alone = conclusions(files[0])[0] + conclusions(files[1])[0]
    pooled, by_data = conclusions(*files)
    assert len(set(alone)) > 1, "the answers must differ for the comparison to mean anything"
    assert pooled == alone
    assert set(by_data) == set(files) and all(v["questions"] == 5 for v in by_data.values())
