"""The strategy registry: a strategy's name (as requests and flags spell it) -> the function that
searches one job. A new strategy is its own module and one line here; the names every schema and
command-line flag accepts are read from this table."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from stage_search.best_of_n import best_of_n
from stage_search.majority import majority_vote
from stage_search.search_job import SearchJob
from stage_search.sentence_beam import sentence_beam_search
from stage_search.single_sample import single_sample
from stage_search.stage_beam import stage_beam_search
from stage_search.swires import swires
from stage_search.trace import SearchResult

Strategy = Callable[[SearchJob], Awaitable[SearchResult]]

STRATEGIES: dict[str, Strategy] = {
    "stage": stage_beam_search,
    "sentence": sentence_beam_search,
    "best_of_n": best_of_n,
    "majority": majority_vote,
    "swires": swires,
    "none": single_sample,
}
