"""Right or wrong, against a record's known answer: whole conclusions (eval), and each stage of a
candidate (judge data, and eval's judge accuracy) against the record's own staged answer.

The synthetic records' stages are written from the scene (training/synthetic_data.py), so their
texts are ground truth: the caption lists every shape, the reasoning states the counts the answer
follows from. A candidate stage is right when it states the same facts, however it words them.
"""

from __future__ import annotations

import re
from collections import Counter

from stage_search.answers import normalize_answer
from stage_search.stages import StageSet

WHOLE_ANSWER = "answer"  # the stage name of whole answers (best-of-N, majority), judged by their conclusion
LETTER = re.compile(r"\b([A-D])\b")
_GROUP = re.compile(r"(\d+)\s+([a-z]+)\s+(circle|square|triangle)s?\b")
_TOTAL = re.compile(r"shows\s+(\d+)\s+shapes?\b")
_FACT = re.compile(r"\d+|\b(?:red|green|blue|yellow|purple|circle|square|triangle|same|more|most|tie)\b")


def reference_answer_text(record: dict) -> str:
    """The record's staged answer (the last "gpt" turn)."""
    return next(t["value"] for t in reversed(record["conversations"]) if t["from"] == "gpt")


def expected_answer(record: dict) -> str:
    if record.get("answer") is not None:
        return str(record["answer"])
    match = re.search(r"<CONCLUSION>(.*?)</CONCLUSION>", reference_answer_text(record), re.S)
    return (match.group(1) if match else reference_answer_text(record)).strip()


def extract_answer(conclusion: str, multiple_choice: bool) -> str:
    """The answer a conclusion gives: its first option letter, or its normalised text."""
    if multiple_choice:
        match = LETTER.search(conclusion.strip())
        return match.group(1) if match else ""
    return normalize_answer(conclusion)


def is_correct(record: dict, conclusion: str) -> bool:
    multiple_choice = "options" in record
    expected = expected_answer(record)
    got = extract_answer(conclusion, multiple_choice)
    return got == (expected if multiple_choice else extract_answer(expected, False))


def caption_facts(text: str) -> tuple[Counter, int | None]:
    """(color, shape) -> count, and the total the caption states."""
    lowered = text.lower()
    groups: Counter = Counter()
    for count, color, shape in _GROUP.findall(lowered):
        groups[(color, shape)] += int(count)
    total = _TOTAL.search(lowered)
    return groups, int(total.group(1)) if total else None


def reasoning_facts(text: str) -> list[str]:
    """The numbers and the color, shape and comparison words, in order."""
    return _FACT.findall(text.lower())


class StageLabeler:
    """Labels candidate stages of one record: True when a stage states what the record's does."""

    def __init__(self, record: dict, stages: StageSet | None = None):
        self.record = record
        self.stages = stages or StageSet.from_names()
        self.reference = self.stages.parse(reference_answer_text(record))

    def has_reference(self, stage_index: int) -> bool:
        """Whether a stage can be labelled: the conclusion always (by the answer), others when the
        record's own answer has that stage."""
        return stage_index == len(self.stages) - 1 or bool(self.reference[self.stages.stages[stage_index].name].strip())

    def is_right(self, stage_index: int, text: str) -> bool:
        name = self.stages.stages[stage_index].name
        reference = self.reference[name]
        if stage_index == len(self.stages) - 1:
            return is_correct(self.record, text)
        if stage_index == 1:
            return caption_facts(text) == caption_facts(reference)
        if stage_index == 2:
            return reasoning_facts(text) == reasoning_facts(reference)
        return " ".join(text.split()) == " ".join(reference.split())

    def whole_answer_is_right(self, text: str) -> bool:
        """A whole answer (best-of-N, majority; sampled after the first stage's opening tag, which
        the search writes): judged by its conclusion."""
        first = self.stages.stages[0].open_tag
        whole = text if text.lstrip().startswith(first) else first + text
        return is_correct(self.record, self.stages.parse(whole)[self.stages.last.name])
