"""Events a search emits as it goes; the HTTP layer turns them into SSE chunks, `ask` prints them."""

from __future__ import annotations

from dataclasses import dataclass

from stage_search.trace import SearchResult


@dataclass(frozen=True)
class StageStarted:
    stage: str
    index: int


@dataclass(frozen=True)
class StageDelta:
    """More text of a stage being sampled as a single candidate (beam width 1); never taken back."""

    stage: str
    index: int
    text: str


@dataclass(frozen=True)
class StageDecided:
    """A stage's winner is chosen; `text` is its whole body (without tags), deltas included."""

    stage: str
    index: int
    text: str


@dataclass(frozen=True)
class SearchFinished:
    result: SearchResult


SearchEvent = StageStarted | StageDelta | StageDecided | SearchFinished
