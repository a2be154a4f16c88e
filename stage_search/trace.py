"""What a search returns: the answer, and a trace of every candidate, judge match and verifier score."""

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
    judge_tokens: int = 0  # the verifier's (judge's) prompts plus its verdict tokens
    judge_calls: int = 0  # the verifier's engine calls: a pairwise match (both orders with debias), a score
    cached_tokens: int = 0  # prompt tokens served from the prefix cache (all calls)
    reasoning_tokens: int = 0  # tokens of the answer before its final stage (the chosen text only)

    def add(self, other: Usage) -> None:
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.judge_tokens += other.judge_tokens
        self.judge_calls += other.judge_calls
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
    judge_calls: int = 0


@dataclass(frozen=True)
class ScoreTrace:
    """The pointwise verifier's verdict on one candidate: P("yes"), and its log-odds, the score
    candidates are ranked by (a reward model's raw number, for a yes/no verifier)."""

    index: int
    probability: float
    score: float
    judge_tokens: int = 0


@dataclass
class StepTrace:
    """One branching step: N candidates sampled in one engine call, reduced to one winner (by
    pairwise matches or pointwise scores), or for swires ranked and the best few kept."""

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
    scores: list[ScoreTrace] = field(default_factory=list)  # pointwise: one per judged candidate
    kept: list[int] | None = None  # swires: the candidates kept for the next stage, best first
    attempt: int = 0  # swires: 0 for the first try, k for the k-th retrace


@dataclass
class StageTrace:
    """A stage of the answer; the stage strategy has one step per stage, sentence several."""

    name: str
    text: str = ""
    steps: list[StepTrace] = field(default_factory=list)
    seconds: float = 0.0
    # The candidate the answer holds, when it is not the last step's winner (swires numbers its
    # candidates across the stage's steps and picks the path only at the end).
    chosen: int | None = None

    @property
    def candidates(self) -> list[CandidateTrace]:
        return [c for step in self.steps for c in step.candidates]

    @property
    def matches(self) -> list[MatchTrace]:
        return [m for step in self.steps for m in step.matches]

    @property
    def scores(self) -> list[ScoreTrace]:
        return [s for step in self.steps for s in step.scores]

    def kept_candidates(self) -> list[CandidateTrace]:
        """The candidates whose text the stage holds: each step's winner (a sentence search's steps
        add up), or the one chosen across the steps."""
        if self.chosen is not None:
            return [c for c in self.candidates if c.index == self.chosen][:1]
        return [c for step in self.steps for c in step.candidates if c.index == step.winner]

    @property
    def winner(self) -> int | None:
        if self.chosen is not None:
            return self.chosen
        return self.steps[-1].winner if self.steps else None


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
    verifier: str = "self"  # which model judged: "self", or the verifier's model name
    verifier_form: str = "pairwise"  # pairwise matches or pointwise scores
    retraces: int = 0  # swires: how many times it went back to sample new captions

    def stage_text(self, name: str) -> str:
        return next(s.text for s in self.stages if s.name == name)

    def to_dict(self) -> dict:
        """JSON-ready: `stages` (each with name, text, candidates, matches, winner), `answer`, `usage`."""
        stages = []
        for stage in self.stages:
            stages.append(
                {
                    "name": stage.name,
                    "text": stage.text.strip(),
                    "candidates": [asdict(c) for c in stage.candidates],
                    "matches": [asdict(m) for m in stage.matches],
                    "scores": [asdict(s) for s in stage.scores],
                    "winner": stage.winner,
                    "steps": [
                        {
                            "prompt_tokens": s.prompt_tokens,
                            "cached_tokens": s.cached_tokens,
                            "winner": s.winner,
                            "rounds": s.rounds,
                            "judge_read_tokens": s.judge_read_tokens,
                            "candidates": len(s.candidates),
                            "kept": s.kept,
                            "attempt": s.attempt,
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
            "verifier": self.verifier,
            "verifier_form": self.verifier_form,
            "retraces": self.retraces,
            "seconds": round(self.seconds, 4),
        }
