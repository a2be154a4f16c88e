"""Single-elimination tournament: N candidates to one winner in ceil(log2 N) concurrent rounds."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")
M = TypeVar("M")


@dataclass(frozen=True)
class TournamentResult(Generic[T, M]):
    winner: T
    matches: list[M]
    rounds: int


async def run_tournament(
    entrants: Sequence[T],
    play: Callable[[T, T, int], Awaitable[tuple[T, M]]],
) -> TournamentResult[T, M]:
    """Pair entrants off; all matches of a round run at once; winners meet in the next round.

    `play(a, b, round)` returns (winner, match record). With an odd count the last entrant gets a
    bye into the next round. N entrants take N-1 matches and ceil(log2 N) rounds of waiting,
    instead of the N-1 sequential comparisons of a pool reduced one pair at a time.
    """
    if not entrants:
        raise ValueError("a tournament needs at least one entrant")
    pool = list(entrants)
    matches: list[M] = []
    rounds = 0
    while len(pool) > 1:
        rounds += 1
        pairs = [(pool[i], pool[i + 1]) for i in range(0, len(pool) - 1, 2)]
        bye = [pool[-1]] if len(pool) % 2 else []
        results = await asyncio.gather(*(play(a, b, rounds) for a, b in pairs))
        matches.extend(match for _, match in results)
        pool = [winner for winner, _ in results] + bye
    return TournamentResult(pool[0], matches, rounds)
