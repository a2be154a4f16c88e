"""Labels against a synthetic record's ground truth: every stage of the record's own answer is
right, and a changed count, shape, color or option makes it wrong."""

from __future__ import annotations

import json

import pytest

from stage_search.answers import normalize_answer
from training.labels import StageLabeler, caption_facts, is_correct


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    from training.synthetic_data import write_dataset

    out = tmp_path_factory.mktemp("labels")
    write_dataset(out, 40, seed=5, test_fraction=0.0)
    return [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]


def stages_of(record: dict) -> dict[str, str]:
    return StageLabeler(record).reference


def test_a_records_own_stages_are_right(records):
    for record in records:
        labeler = StageLabeler(record)
        for index, text in enumerate(stages_of(record).values()):
            assert labeler.is_right(index, text), (record["id"], index, text)
        assert labeler.whole_answer_is_right(record["conversations"][1]["value"].removeprefix("<SUMMARY>"))


def test_a_caption_in_another_order_is_right_and_a_changed_count_is_wrong():
    caption = "The image shows 3 shapes on a white background: 1 blue circle and 2 red squares."
    reordered = "The image shows 3 shapes on a white background: 2 red squares and 1 blue circle."
    assert caption_facts(caption) == caption_facts(reordered)
    for wrong in (
        caption.replace("2 red", "3 red"),
        caption.replace("blue circle", "green circle"),
        caption.replace("circle", "triangle"),
        caption.replace("shows 3", "shows 4"),
    ):
        assert caption_facts(wrong) != caption_facts(caption), wrong


def test_changed_reasoning_and_conclusions_are_wrong(records):
    checked = 0
    for record in records:
        labeler = StageLabeler(record)
        reasoning = stages_of(record)["REASONING"]
        digits = [c for c in reasoning if c.isdigit()]
        if digits:
            changed = reasoning.replace(digits[0], str((int(digits[0]) + 1) % 10), 1)
            assert not labeler.is_right(2, changed), (reasoning, changed)
            checked += 1
        conclusion = stages_of(record)["CONCLUSION"]
        other = "A" if conclusion.strip() != "A" else "B"
        wrong = other if "options" in record else "The answer is wrongcolor."
        assert not labeler.is_right(3, wrong) and not is_correct(record, wrong)
    assert checked > 20


def test_answers_written_differently_are_one_answer():
    assert normalize_answer("The answer is 3.") == normalize_answer(" 3 ") == "3"
    assert normalize_answer("Answer: Purple") == "purple"
    assert normalize_answer("B") == normalize_answer("b.")
