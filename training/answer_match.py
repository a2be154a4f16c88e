"""What an answer says, read the way the public benchmarks' scorers read it: the option letter of a
multiple-choice answer, yes or no, a number, or normalised text. Used to check a teacher's
conclusion against a record's known answer (`annotate`) and to score benchmark files (`eval`).

The option letter and the options themselves are read by stage_search/choices.py (the verifier's
question quotes the picked option with the same rules); they are named here too for the scorers.
"""

from __future__ import annotations

import re

from stage_search.answers import normalize_answer
from stage_search.choices import OPTION_LETTERS, option_letter, options_in_question

__all__ = ["OPTION_LETTERS", "number_in", "option_letter", "options_in_question", "same_text", "yes_or_no"]

_PUNCTUATION = re.compile(r"[.()\[\],:;!*#{}\"'`]")
_NUMBER = re.compile(r"-?\d+(?:,\d{3})*(?:\.\d+)?")


def yes_or_no(answer: str) -> str | None:
    """ "yes" or "no" when the answer says exactly one of them, else None."""
    words = set(_PUNCTUATION.sub(" ", answer.lower()).split())
    said = {"yes", "no"} & words
    return said.pop() if len(said) == 1 else None


def number_in(answer: str) -> float | None:
    """The answer as a number: the whole answer when it is one, else the only number it states."""
    text = normalize_answer(answer).replace(",", "")
    try:
        return float(text)
    except ValueError:
        found = {float(n.replace(",", "")) for n in _NUMBER.findall(text)}
        return found.pop() if len(found) == 1 else None


def same_text(answer: str, expected: str) -> bool:
    """Equal once "The answer is", case, spaces and a final period are set aside."""
    return normalize_answer(answer) == normalize_answer(expected)
