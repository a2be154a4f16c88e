"""The engine contract: everything the stage search needs from an inference engine, and nothing more.

The search speaks only to `Engine`. It knows no vLLM or transformers, and the engine knows no stages:
it samples continuations of a rendered prompt and scores single-token options. Every call carries a
`job_id` (one per search job, i.e. per HTTP request) so that a whole job can be aborted at once.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from PIL.Image import Image

FinishReason = Literal["stop", "length", "abort"]


def finish_reason_of(reason: str | None) -> FinishReason:
    """The contract's finish reason for vLLM's (in process or over its API): "stop" for a stop
    string or end-of-turn, "length" at max_tokens, anything else (an abort) "abort"."""
    if reason == "stop":
        return "stop"
    return "length" if reason == "length" else "abort"


class EngineError(RuntimeError):
    """The engine cannot serve any more requests (it died or was shut down)."""


class InvalidRequestError(ValueError):
    """The engine refuses a request for its content (bad input, not an engine failure).

    `param` names what was wrong in the engine's own terms ("max_tokens", "image", ...) when known.
    """

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param


class PromptTooLongError(InvalidRequestError):
    """A prompt does not fit the model's context."""

    def __init__(self, message: str):
        super().__init__(message, param="prompt")


@dataclass(frozen=True)
class ChatPart:
    """One part of a message: text, or an image (a PIL image, already decoded and checked)."""

    type: Literal["text", "image"]
    text: str = ""
    image: Image | None = None

    @classmethod
    def of_text(cls, text: str) -> ChatPart:
        return cls(type="text", text=text)

    @classmethod
    def of_image(cls, image: Image) -> ChatPart:
        return cls(type="image", image=image)


@dataclass(frozen=True)
class ChatMessage:
    """A chat message; content is plain text or a list of parts."""

    role: Literal["system", "user", "assistant"]
    content: str | tuple[ChatPart, ...]

    @property
    def text(self) -> str:
        """The message's text: its text parts, one per line (images left out)."""
        if isinstance(self.content, str):
            return self.content
        return "\n".join(p.text for p in self.content if p.type == "text")


@dataclass(frozen=True)
class Prompt:
    """A prompt rendered with the model's chat template, ready for the engine.

    `text` already holds the model's own image placeholders, one per entry of `images`, in order.
    """

    text: str
    images: tuple[Image, ...] = ()


@dataclass(frozen=True)
class SamplingControls:
    """A client's own sampling controls (OpenAI's and vLLM's request fields of these names), given
    to the sampler as they are; the defaults have no effect."""

    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    top_k: int = 0  # 0: off
    min_p: float = 0.0
    logit_bias: tuple[tuple[int, float], ...] = ()  # (token id, bias) pairs

    def changed(self) -> list[str]:
        """The names of the controls set to something with an effect."""
        return [f.name for f in fields(self) if getattr(self, f.name) != f.default]


@dataclass(frozen=True)
class SamplingSettings:
    """How to sample the candidates of one engine call."""

    n: int = 1
    max_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    # False: recompute the prompt even if its prefix is cached (to measure unshared baselines).
    use_prefix_cache: bool = True
    # True: always sample max_tokens (end-of-turn does not stop); for exact token budgets.
    ignore_eos: bool = False
    # True: fill Candidate.cumulative_logprob. Off by default: vLLM then skips a per-token log-softmax
    # and detokenised logprob record that nothing in the search reads (docs/benchmarks.md).
    logprobs: bool = False
    # A client's own sampling controls: penalties, top-k, min-p, logit bias.
    controls: SamplingControls = field(default_factory=SamplingControls)
    # Fill Candidate.token_logprobs, with this many most likely alternatives per token (None: off).
    token_logprobs: int | None = None
    # Structured output: the text must be JSON matching this schema ({}: any JSON object).
    json_schema: dict | None = None

    def beyond_basics(self) -> list[str]:
        """What this asks of a sampler beyond temperature, top-p, seed and stop strings, by name."""
        extra = self.controls.changed()
        return extra + [n for n in ("token_logprobs", "json_schema") if getattr(self, n) is not None]


@dataclass(frozen=True)
class TokenLogprob:
    """One sampled token, its log-probability, and the most likely alternatives at its place."""

    token: str
    logprob: float
    top: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class Candidate:
    """One sampled continuation."""

    text: str
    num_tokens: int
    cumulative_logprob: float | None  # None unless SamplingSettings.logprobs asked for it
    finish_reason: FinishReason
    # The stop string that ended the candidate when finish_reason == "stop" (None for end-of-turn).
    stop_reason: str | None = None
    # Per token, when SamplingSettings.token_logprobs asked for them.
    token_logprobs: tuple[TokenLogprob, ...] | None = None


@dataclass(frozen=True)
class Generation:
    """The result of one `generate` call: n candidates sharing one prompt."""

    candidates: tuple[Candidate, ...]
    prompt_tokens: int
    cached_tokens: int


@dataclass(frozen=True)
class StreamDelta:
    """A piece of one streamed candidate: new text, and on the last piece the finished candidate."""

    text: str
    candidate: Candidate | None = None
    prompt_tokens: int = 0
    cached_tokens: int = 0


@dataclass(frozen=True)
class ChoiceResult:
    """The probability of each single-token option as the next token, summing to 1."""

    probabilities: dict[str, float]
    prompt_tokens: int
    cached_tokens: int

    @property
    def best(self) -> str:
        return max(self.probabilities, key=self.probabilities.__getitem__)


@dataclass(frozen=True)
class EngineStats:
    """A snapshot of engine load, for metrics and for load-adaptive decisions."""

    running_requests: int = 0
    waiting_requests: int = 0
    kv_cache_usage: float = 0.0  # 0..1
    prefix_cache_queries: int = 0  # tokens looked up in the prefix cache, since start
    prefix_cache_hits: int = 0  # tokens found there, since start
    # A remote engine's traffic since start (zero in process): requests, their bodies' bytes, and
    # the images they carried as data, with those bytes (the other requests name images by digest).
    wire_requests: int = 0
    wire_bytes: int = 0
    wire_image_uploads: int = 0
    wire_image_bytes: int = 0

    @property
    def prefix_cache_hit_ratio(self) -> float:
        return self.prefix_cache_hits / self.prefix_cache_queries if self.prefix_cache_queries else 0.0


class Engine(abc.ABC):
    """An async inference engine for one vision-language model."""

    #: The name clients use for the model (the OpenAI `model` field).
    model_name: str
    #: The model's context length in tokens.
    max_model_len: int
    #: True for an engine that lives elsewhere and may come back after an outage (a remote server):
    #: the server then waits for it, unready, rather than exiting for its supervisor to restart it.
    outlives_engine_outages: bool = False

    def judge_engine(self) -> Engine:
        """The engine the search's judge asks: this one, unless the judge runs elsewhere."""
        return self

    @abc.abstractmethod
    def render(self, messages: Sequence[ChatMessage], assistant_prefix: str = "") -> Prompt:
        """Render messages with the model's chat template.

        With `assistant_prefix`, the prompt ends inside an open assistant turn that already holds
        that text, so generation continues it (e.g. accepted stages + "<CAPTION>").
        """

    @abc.abstractmethod
    async def generate(
        self, prompt: Prompt, settings: SamplingSettings, *, job_id: str, priority: int = 0
    ) -> Generation:
        """Sample `settings.n` candidates for one prompt in one call (the prefix is shared).

        Lower `priority` values run first where the engine schedules by priority.
        Raises PromptTooLongError for a prompt over the context, InvalidRequestError for any other
        input the engine refuses, EngineError when the engine is dead.
        """

    async def stream(
        self, prompt: Prompt, settings: SamplingSettings, *, job_id: str, priority: int = 0
    ) -> AsyncIterator[StreamDelta]:
        """One candidate (settings.n must be 1), as text arrives; the last delta holds the candidate.

        This default yields the whole text at once; engines that can stream override it.
        """
        generation = await self.generate(prompt, settings, job_id=job_id, priority=priority)
        candidate = generation.candidates[0]
        yield StreamDelta(candidate.text, candidate, generation.prompt_tokens, generation.cached_tokens)

    @abc.abstractmethod
    async def choose(self, prompt: Prompt, options: Sequence[str], *, job_id: str, priority: int = 0) -> ChoiceResult:
        """Probabilities of each option (each exactly one token) as the next token, summing to 1."""

    @abc.abstractmethod
    async def count_tokens(self, text: str) -> int:
        """How many tokens `text` is, as the model's tokenizer splits it (no special tokens)."""

    @abc.abstractmethod
    async def abort(self, job_id: str) -> None:
        """Abort every engine request of a job; callers waiting on them get finish_reason 'abort'."""

    @abc.abstractmethod
    async def is_healthy(self) -> bool:
        """True while the engine can serve requests."""

    @abc.abstractmethod
    def stats(self) -> EngineStats:
        """The latest load figures (cheap; no engine round trip)."""

    @abc.abstractmethod
    async def shutdown(self) -> None:
        """Stop the engine and release its processes and memory. Safe to call twice."""
