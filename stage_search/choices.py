"""Multiple-choice questions: the options written into a question, and the option an answer picks.

The verifier's question quotes the option a candidate picks (prompts.verify_question): a bare
letter can only be checked by looking it up among the question's options, a lookup that small
verifiers do not learn (docs/search.md); with the option's text beside it, checking the letter is
comparing that text with the reasoning's answer. The benchmarks' scorers read letters the same way
(training/answer_match.py).

The letter rules follow common practice (VLMEvalKit's, in our own code): a lone option letter near
the end of the answer, or "the answer is X"; failing that, the one option whose text the answer
contains. An answer that names two letters, or none, gives no letter.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping

OPTION_LETTERS = "ABCDE"
_OPTION_LINE = re.compile(r"^\s*\(?([A-E])[.):]\s*(.+?)\s*$")
_PUNCTUATION = re.compile(r"[.()\[\],:;!*#{}\"'`]")
_SAYS_LETTER = re.compile(r"(?i)\banswer\s+is\s*:?\s*\**\(?([A-E])\)?\**(?![A-Za-z])")


def options_in_question(question: str) -> dict[str, str]:
    """Options written into a question, one per line: "A. text", "A: text", "(A) text"."""
    options: dict[str, str] = {}
    for line in question.splitlines():
        match = _OPTION_LINE.match(line)
        if match and match.group(1) not in options:
            options[match.group(1)] = match.group(2)
    # Options run A, B, C...: a stray "C. " line alone is not a list of options.
    letters = "".join(options)
    return options if len(options) >= 2 and string.ascii_uppercase.startswith(letters) else {}


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


def picked_option(question: str, answer: str) -> tuple[str, str] | None:
    """(letter, text) of the option a final answer picks in a multiple-choice question, or None
    when the question has no options or the answer picks none of them."""
    options = options_in_question(question)
    letter = option_letter(answer, options) if options else None
    return (letter, options[letter]) if letter is not None else None
