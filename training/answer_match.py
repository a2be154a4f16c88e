"""What an answer says, read the way the public benchmarks' scorers read it: the option letter of a
multiple-choice answer, yes or no, a number, or normalised text. Used to check a teacher's
conclusion against a record's known answer (`annotate`) and to score benchmark files (`eval`).

The letter rules follow common practice (VLMEvalKit's, in our own code): a lone option letter near
the end of the answer, or "the answer is X"; failing that, the one option whose text the answer
contains. An answer that names two letters, or none, gives no letter.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping

from stage_search.answers import normalize_answer

OPTION_LETTERS = "ABCDE"
_PUNCTUATION = re.compile(r"[.()\[\],:;!*#{}\"'`]")
_SAYS_LETTER = re.compile(r"(?i)\banswer\s+is\s*:?\s*\**\(?([A-E])\)?\**(?![A-Za-z])")
_NUMBER = re.compile(r"-?\d+(?:,\d{3})*(?:\.\d+)?")


def option_letter(answer: str, options: Mapping[str, str]) -> str | None:
    """The option an answer picks, or None when it picks none or several."""
    letters = [letter for letter in options if letter in OPTION_LETTERS]
    words = _PUNCTUATION.sub(" ", answer).split()
    named = {word for word in words if word in letters}
    if len(named) == 1:
        (letter,) = named
        # A letter early in a long answer is more likely the article "A" than an option.
        if len(words) - 1 - max(i for i, w in enumerate(words) if w == letter) < 5:
            return letter
    said = _SAYS_LETTER.search(answer)
    if said and said.group(1).upper() in letters:
        return said.group(1).upper()
    if named:
        return None
    return _option_by_text(answer, options)


def _option_by_text(answer: str, options: Mapping[str, str]) -> str | None:
    """The one option whose text a short answer contains."""
    lowered = answer.lower()
    texts = {letter: str(text).lower().strip() for letter, text in options.items() if str(text).strip()}
    if not texts or len(lowered) > 2 * sum(len(t) for t in texts.values()):
        return None
    found = [letter for letter, text in texts.items() if text in lowered]
    return found[0] if len(found) == 1 else None


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


def options_in_question(question: str) -> dict[str, str]:
    """Options written into a question, one per line: "A. text", "A: text", "(A) text"."""
    options = {}
    for line in question.splitlines():
        match = re.match(r"^\s*\(?([A-E])[.):]\s*(.+?)\s*$", line)
        if match and match.group(1) not in options:
            options[match.group(1)] = match.group(2)
    # Options run A, B, C...: a stray "C. " line alone is not a list of options.
    letters = "".join(options)
    return options if len(options) >= 2 and string.ascii_uppercase.startswith(letters) else {}
