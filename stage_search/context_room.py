"""Room in the model's context window, so that a search that was admitted never fails half-way on
it: a step's candidates leave room for every later stage, and the judge reads as much of two
candidates as fits beside the conversation.

Counts the engine reported (a step's prompt tokens, a candidate's tokens) are exact. Text that has
not been through the engine yet is bounded by its UTF-8 bytes: a token covers at least one byte.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from stage_search.judge import Contender

# The chat template's turn markers, and tags re-tokenised at a stage boundary.
TURN_MARGIN = 32
# Tokens kept for each stage still to come: its two tags and a short text.
STAGE_RESERVE = 64
# Fewer tokens of each candidate than this and the judge is not asked: the first candidate stays.
MIN_JUDGED_TOKENS = 16
# A cut candidate keeps this share of the characters its token share would predict, then is
# counted again: token lengths vary along a text.
_CUT_SAFETY = 0.9


def byte_bound(text: str) -> int:
    """At least the number of tokens `text` is, in any tokenizer."""
    return len(text.encode())


def stage_room(context_limit: int, context_used: int, later_stages: int) -> int:
    """Tokens a step may sample beside a prompt of `context_used` tokens so that the later stages
    still fit: what is left after keeping STAGE_RESERVE for each of them, or when that leaves less
    than an equal share, an equal share."""
    free = context_limit - context_used - TURN_MARGIN
    return max(free - later_stages * STAGE_RESERVE, free // (later_stages + 1))


def judge_share(
    context_limit: int, prompt_tokens: int, question: str, verdict_tokens: int, candidates: int = 2
) -> int | None:
    """Tokens of each candidate the verifier can read: its prompt is the step's prompt, the
    question around the candidates (two for a pairwise match, one for a pointwise score), and room
    for the verdict. None when the limit is unknown."""
    if context_limit <= 0:
        return None
    room = context_limit - prompt_tokens - byte_bound(question) - TURN_MARGIN - verdict_tokens
    return room // candidates


async def as_judged(contender: Contender, share: int, count_tokens: Callable[[str], Awaitable[int]]) -> Contender:
    """The contender as the judge sees it: whole, or its longest opening found within `share`
    tokens. Its text is counted as the judge's prompt will hold it: a sampled candidate can take
    more tokens re-read than it took to sample. Counted only when its bytes do not already bound it."""
    text = contender.text
    if byte_bound(text) <= share:
        return contender
    tokens = await count_tokens(text)
    keep = len(text)
    while tokens > share:
        keep = int(keep * share / tokens * _CUT_SAFETY)
        tokens = await count_tokens(text[:keep])
    return contender if keep == len(text) else Contender(contender.index, text[:keep])
