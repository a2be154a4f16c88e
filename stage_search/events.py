"""Events a search emits as it goes; the HTTP layer turns them into SSE chunks, `ask` prints them."""

from __future__ import annotations

from dataclasses import dataclass

from stage_search.trace import SearchResult


@dataclass(frozen=True)
class StageStarted:
    stage: str
    index: int


@dataclass(frozen=True)
class StageDecided:
    """A stage's winner is chosen; `text` is its body (without tags) and will not change."""

    stage: str
    index: int
    text: str


@dataclass(frozen=True)
class SearchFinished:
    result: SearchResult


SearchEvent = StageStarted | StageDecided | SearchFinished
