"""The search's settings: one typed object, validated once, shared by every strategy."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Literal, get_args

from stage_search.answer_options import AnswerOptions
from stage_search.stages import StageSet
from stage_search.strategies import STRATEGIES

JudgeMode = Literal["logprob", "generative"]
StagePrompt = Literal["auto", "always", "never"]
# How the verifier ranks candidates: pairwise matches (the paper's first version), or one score per
# candidate (its final version's reward model); auto: pointwise for a separate verifier model,
# pairwise when the model judges itself.
VerifierForm = Literal["auto", "pairwise", "pointwise"]

# The names flags and schemas accept, read from their one definition.
STRATEGY_NAMES: tuple[str, ...] = tuple(STRATEGIES)
JUDGE_MODES: tuple[str, ...] = get_args(JudgeMode)
VERIFIER_FORMS: tuple[str, ...] = get_args(VerifierForm)
STAGE_PROMPTS: tuple[str, ...] = get_args(StagePrompt)

# The temperature candidates are sampled at when a request leaves it out and the search branches
# (beam width above 1): chosen from the demo model's measurements (docs/benchmarks.md). A single
# sample (strategy none, or beam width 1) without a temperature is greedy.
DEFAULT_SEARCH_TEMPERATURE = 0.6

if TYPE_CHECKING:
    StrategyName = str  # a type checker cannot read a Literal off a table; run time checks the names
else:
    StrategyName = Literal[STRATEGY_NAMES]


@dataclass(frozen=True)
class SwiresSettings:
    """The counts of the paper's final search (SWIRES, stage_search/swires.py), its defaults those
    of the published code, and when it goes back to sample new captions."""

    captions: int = 4  # captions sampled per attempt
    kept_captions: int = 2  # the best-scored ones, each continued by reasoning
    reasonings_per_caption: int = 2
    conclusions: int = 3  # reasoning paths (the best-scored of every attempt) given a conclusion each
    max_retraces: int = 4  # attempts after the first
    # Retrace while the second-best reasoning score is at or below this (the verifier's log-odds:
    # 0 is P(yes) = 1/2). The published rule is the reward model's mean score plus 0.2533 standard
    # deviations; the recipe writes that rule on the demo verifier's own scores into its
    # training.json (`swires_cutoff`), which serve, ask and eval read for a verifier given by its
    # folder (server/search_flags.py); this is the default for one without.
    cutoff: float = 0.0

    def __post_init__(self) -> None:
        counts = (self.captions, self.kept_captions, self.reasonings_per_caption, self.conclusions)
        if not all(1 <= c <= 16 for c in counts) or self.kept_captions > self.captions:
            raise ValueError("swires counts must be between 1 and 16, and keep no more captions than it samples")
        if not 0 <= self.max_retraces <= 16:
            raise ValueError("swires max_retraces must be between 0 and 16")
        if not -30.0 <= self.cutoff <= 30.0:
            raise ValueError("swires cutoff must be a log-odds score between -30 and 30")


@dataclass(frozen=True)
class SearchConfig:
    """How one question is searched. Defaults follow the paper where it says (top_p 0.9)."""

    strategy: StrategyName = "stage"
    beam_width: int = 4
    judge: JudgeMode = "logprob"
    debias: bool = False
    verifier_form: VerifierForm = "auto"
    swires: SwiresSettings = field(default_factory=SwiresSettings)
    stage_prompt: StagePrompt = "auto"
    stages: StageSet = field(default_factory=StageSet.from_names)
    # None: `search_temperature` when the search branches, greedy when it does not.
    temperature: float | None = None
    search_temperature: float = DEFAULT_SEARCH_TEMPERATURE
    top_p: float = 0.9
    seed: int | None = None
    max_tokens_per_stage: int = 512
    # Budget for the whole answer (all stages); None means len(stages) * max_tokens_per_stage.
    max_tokens: int | None = None
    # Sentence strategy: at most this many sentences per stage before the search closes it.
    max_sentences_per_stage: int = 8
    # Generative judge: tokens allowed for a verdict like "Since ..., I choose response 2".
    judge_max_tokens: int = 96
    # The client's controls over the answer's sampling, stop strings, log-probabilities and format.
    answer: AnswerOptions = field(default_factory=AnswerOptions)

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGY_NAMES:
            raise ValueError(f"strategy must be one of {', '.join(STRATEGY_NAMES)}")
        if self.judge not in JUDGE_MODES:
            raise ValueError(f"judge must be one of {', '.join(JUDGE_MODES)}")
        if self.verifier_form not in VERIFIER_FORMS:
            raise ValueError(f"verifier_form must be one of {', '.join(VERIFIER_FORMS)}")
        if self.stage_prompt not in STAGE_PROMPTS:
            raise ValueError(f"stage_prompt must be one of {', '.join(STAGE_PROMPTS)}")
        if not 1 <= self.beam_width <= 64:
            raise ValueError("beam_width must be between 1 and 64")
        if self.max_tokens_per_stage < 1 or (self.max_tokens is not None and self.max_tokens < len(self.stages)):
            raise ValueError("token limits must leave at least one token per stage")
        temperatures = (
            (self.search_temperature,) if self.temperature is None else (self.temperature, self.search_temperature)
        )
        if not all(0.0 <= t <= 2.0 for t in temperatures) or not 0.0 < self.top_p <= 1.0:
            raise ValueError("temperature must be in [0, 2] and top_p in (0, 1]")

    @property
    def branches(self) -> bool:
        """Whether candidates are sampled and judged (otherwise one sample answers)."""
        return self.beam_width > 1 and self.strategy != "none"

    @property
    def sampling_temperature(self) -> float:
        """The temperature candidates are sampled at: the request's, else the rule above."""
        if self.temperature is not None:
            return self.temperature
        return self.search_temperature if self.branches else 0.0

    def resolved_verifier_form(self, *, separate_verifier: bool) -> str:
        """pairwise or pointwise: swires always scores pointwise; auto is pointwise for a separate
        verifier model, pairwise when the model judges itself."""
        if self.strategy == "swires":
            return "pointwise"
        if self.verifier_form != "auto":
            return self.verifier_form
        return "pointwise" if separate_verifier else "pairwise"

    @property
    def total_token_budget(self) -> int:
        return self.max_tokens if self.max_tokens is not None else len(self.stages) * self.max_tokens_per_stage

    def with_(self, **changes) -> SearchConfig:
        return replace(self, **changes)
