"""What a conclusion says, normalised, so that answers written differently can be counted as one."""

from __future__ import annotations

import re

_ANSWER_PREFIX = re.compile(r"^(the\s+)?(final\s+)?answer\s*(is)?\s*[:\-]?\s*", re.IGNORECASE)


def normalize_answer(conclusion: str) -> str:
    """The conclusion's text without "The answer is", a trailing period, case or extra spaces:
    "The answer is 3." and "3" are one answer; "B" and "b" too."""
    text = _ANSWER_PREFIX.sub("", conclusion.strip()).strip().rstrip(".").strip()
    return " ".join(text.split()).lower()
