"""What a search returns: the answer, and a trace of every candidate and every judge match."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from models.engine import TokenLogprob

AnswerFinish = Literal["stop", "length"]  # why an answer ended: complete, or cut by a token limit


@dataclass
class Usage:
    """Token totals of one search."""

    prompt_tokens: int = 0  # prompts of candidate-generation calls
    completion_tokens: int = 0  # every candidate generated, winners or not
    judge_tokens: int = 0  # judge prompts plus judge verdict tokens
    cached_tokens: int = 0  # prompt tokens served from the prefix cache (all calls)
    reasoning_tokens: int = 0  # tokens of the answer before its final stage (the chosen text only)

    def add(self, other: Usage) -> None:
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.judge_tokens += other.judge_tokens
        self.cached_tokens += other.cached_tokens
        self.reasoning_tokens += other.reasoning_tokens

    @property
    def search_tokens(self) -> int:
        """Every token the search generated or judged: all candidates, winners or not, and the judge."""
        return self.completion_tokens + self.judge_tokens


@dataclass(frozen=True)
class CandidateTrace:
    index: int
    text: str
    tokens: int
    finish_reason: str  # stop (closing tag or end of turn), length (closed by the search), abort
    # Index of the identical candidate it was merged into before judging (None: judged itself).
    merged_into: int | None = None


@dataclass(frozen=True)
class MatchTrace:
    round: int
    pair: tuple[int, int]  # candidate indices, in the order shown to the judge first
    probabilities: tuple[float, float]  # P(first of pair wins), P(second wins), after debias
    winner: int
    verdicts: tuple[str, ...] = ()  # generative judge: the free-text verdicts
    judge_tokens: int = 0


@dataclass
class StepTrace:
    """One branching step: N candidates sampled in one engine call, reduced to one winner."""

    prompt_tokens: int = 0
    cached_tokens: int = 0
    candidates: list[CandidateTrace] = field(default_factory=list)
    matches: list[MatchTrace] = field(default_factory=list)
    winner: int = 0
    rounds: int = 0
    # When the context was nearly full: the tokens of each candidate the judge read (longer ones
    # were cut to their opening), or 0 when there was too little room to judge at all. None: the
    # judge read every candidate whole (or there was nothing to judge).
    judge_read_tokens: int | None = None


@dataclass
class StageTrace:
    """A stage of the answer; the stage strategy has one step per stage, sentence several."""

    name: str
    text: str = ""
    steps: list[StepTrace] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def candidates(self) -> list[CandidateTrace]:
        return [c for step in self.steps for c in step.candidates]

    @property
    def matches(self) -> list[MatchTrace]:
        return [m for step in self.steps for m in step.matches]


@dataclass
class SearchResult:
    strategy: str
    beam_width: int
    text: str  # the whole answer with its stage tags
    answer: str  # the conclusion alone
    stages: list[StageTrace]
    usage: Usage
    seconds: float
    # best_of_n judges whole answers, not stages: its steps live here.
    answer_steps: list[StepTrace] = field(default_factory=list)
    finish_reason: AnswerFinish = "stop"  # "length" when the conclusion was cut by a token limit
    # The conclusion's tokens, when the request asked for log-probabilities.
    answer_logprobs: list[TokenLogprob] | None = None

    def stage_text(self, name: str) -> str:
        return next(s.text for s in self.stages if s.name == name)

    def to_dict(self) -> dict:
        """JSON-ready: `stages` (each with name, text, candidates, matches, winner), `answer`, `usage`."""
        stages = []
        for stage in self.stages:
            last = stage.steps[-1] if stage.steps else None
            stages.append(
                {
                    "name": stage.name,
                    "text": stage.text.strip(),
                    "candidates": [asdict(c) for c in stage.candidates],
                    "matches": [asdict(m) for m in stage.matches],
                    "winner": last.winner if last else None,
                    "steps": [
                        {
                            "prompt_tokens": s.prompt_tokens,
                            "cached_tokens": s.cached_tokens,
                            "winner": s.winner,
                            "rounds": s.rounds,
                            "judge_read_tokens": s.judge_read_tokens,
                            "candidates": len(s.candidates),
                        }
                        for s in stage.steps
                    ],
                    "seconds": round(stage.seconds, 4),
                }
            )
        return {
            "strategy": self.strategy,
            "beam_width": self.beam_width,
            "text": self.text,
            "answer": self.answer.strip(),
            "stages": stages,
            "answer_steps": [asdict(s) for s in self.answer_steps],
            "usage": asdict(self.usage),
            "finish_reason": self.finish_reason,
            "seconds": round(self.seconds, 4),
        }
