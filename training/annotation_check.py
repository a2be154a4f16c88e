"""Checks on a teacher's staged answer before it becomes a training record: the four stages present,
each once, in order and non-empty; and the conclusion giving the record's known answer, by the
option letter for multiple choice, else by its text or number. What no rule can settle (a free-form
answer worded differently) is left to a second teacher call (`KnownAnswer.needs_teacher`)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from stage_search.stages import STAGE_SEPARATOR, StageSet
from training.answer_match import number_in, option_letter, same_text


class Rejected(Exception):
    """A result that cannot be kept: `reason` is written to the rejects file, `kind` (format, answer,
    teacher) sums them up, and `reply` is the teacher's text when there was one."""

    def __init__(self, reason: str, kind: str = "format", reply: str | None = None):
        super().__init__(reason)
        self.reason, self.kind, self.reply = reason, kind, reply


def staged_text(reply: str, stages: StageSet) -> tuple[str, dict[str, str]]:
    """The four stages of a reply, rewritten in the training records' layout (each stage in its tags,
    separated as the model writes them), and each stage's text. Text around the tags is dropped."""
    found = {}
    position = 0
    for stage in stages:
        opened = [m.start() for m in re.finditer(re.escape(stage.open_tag), reply)]
        closed = [m.start() for m in re.finditer(re.escape(stage.close_tag), reply)]
        if not opened or not closed:
            raise Rejected(f"no {stage.open_tag}...{stage.close_tag} stage")
        if len(opened) > 1 or len(closed) > 1:
            raise Rejected(f"the {stage.name} stage appears more than once")
        start, end = opened[0] + len(stage.open_tag), closed[0]
        if opened[0] < position or end < start:
            raise Rejected(f"the {stage.name} stage is out of order")
        found[stage.name] = reply[start:end].strip()
        if not found[stage.name]:
            raise Rejected(f"the {stage.name} stage is empty")
        position = end + len(stage.close_tag)
    text = STAGE_SEPARATOR.join(f"{s.open_tag}{found[s.name]}{s.close_tag}" for s in stages)
    return text, found


@dataclass(frozen=True)
class KnownAnswer:
    """A record's answer as the checks compare it: the letter and options for multiple choice."""

    text: str
    options: dict[str, str]  # letter -> option text; empty when not multiple choice

    @property
    def multiple_choice(self) -> bool:
        return bool(self.options)

    def agrees(self, conclusion: str) -> bool | None:
        """True or False when a rule decides; None when only the teacher can (free-form answers)."""
        if self.multiple_choice:
            picked = option_letter(conclusion, self.options)
            if picked is None:
                raise Rejected(f"the conclusion {conclusion[:80]!r} names no single option", "answer")
            return picked == self.text
        if same_text(conclusion, self.text):
            return True
        expected_number, given_number = number_in(self.text), number_in(conclusion)
        if expected_number is not None and given_number is not None:
            return given_number == expected_number
        return None

    def needs_teacher(self, conclusion: str) -> bool:
        decided = self.agrees(conclusion)
        if decided is False:
            raise Rejected(f"the conclusion {conclusion[:80]!r} does not give the answer {self.text!r}", "answer")
        return decided is None


def known_answer(answer: str, options: dict[str, str]) -> KnownAnswer:
    """The record's answer; for multiple choice an option's text is turned into its letter."""
    answer = answer.strip()
    if options:
        letter = answer.rstrip(".").strip("() ").upper()
        if letter in options:
            return KnownAnswer(letter, options)
        by_text = [letter for letter, text in options.items() if same_text(text, answer)]
        if len(by_text) == 1:
            return KnownAnswer(by_text[0], options)
    return KnownAnswer(answer, {})
