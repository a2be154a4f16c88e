"""OpenAI chat-completion request and response models, field by field, plus our extensions.

Extensions: the request's `reasoning` object (clients send it through `extra_body`) and vLLM's
sampling fields; in responses, `message.reasoning_content` (and `reasoning`, vLLM's newer name),
`delta.stage`, `usage.judge_tokens`, `usage.search_tokens` and `reasoning`. Every request field has
a defined behaviour (docs/api.md): applied, accepted with no effect, or refused with a reason
(REFUSED_FIELDS); unknown fields are refused (400) rather than silently ignored.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer

from stage_search.config import JudgeMode, StagePrompt, StrategyName, VerifierForm
from stage_search.trace import AnswerFinish


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ImageURL(_Strict):
    url: str
    detail: Literal["auto", "low", "high"] | None = None


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class ImagePart(_Strict):
    type: Literal["image_url"]
    image_url: ImageURL


ContentPart = Annotated[TextPart | ImagePart, Field(discriminator="type")]


# Written as the server checks them, so that the published schema says what is accepted: system and
# user messages need content, images come only from the user, an assistant turn may be empty.
NonEmptyText = Annotated[str, Field(min_length=1)]


class SystemMessage(_Strict):
    role: Literal["system", "developer"]
    content: NonEmptyText | Annotated[list[TextPart], Field(min_length=1)]
    name: str | None = None


class UserMessage(_Strict):
    role: Literal["user"]
    content: NonEmptyText | Annotated[list[ContentPart], Field(min_length=1)]
    name: str | None = None


class AssistantMessage(_Strict):
    role: Literal["assistant"]
    content: str | list[TextPart] | None = None
    name: str | None = None


Message = Annotated[SystemMessage | UserMessage | AssistantMessage, Field(discriminator="role")]
ROLE_TAGS = ("system", "developer", "user", "assistant")  # pydantic names the union's branch in errors


class StreamOptions(_Strict):
    include_usage: bool = False


class ReasoningOptions(_Strict):
    """The `reasoning` extension: how to search, and what to return."""

    strategy: StrategyName | None = None
    beam_width: int | Literal["auto"] | None = None
    judge: JudgeMode | None = None
    debias: bool | None = None
    verifier_form: VerifierForm | None = None
    stage_prompt: StagePrompt | None = None
    max_tokens_per_stage: Annotated[int, Field(ge=1)] | None = None
    trace: bool = False
    output: Literal["split", "tagged"] = "split"
    timeout: Annotated[float, Field(gt=0)] | None = None  # seconds; default: the server's --request-timeout


class ResponseFormatText(_Strict):
    type: Literal["text"]


class ResponseFormatJsonObject(_Strict):
    type: Literal["json_object"]


class JsonSchemaFormat(_Strict):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    name: Annotated[str, Field(min_length=1, max_length=64)]
    description: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class ResponseFormatJsonSchema(_Strict):
    type: Literal["json_schema"]
    json_schema: JsonSchemaFormat


ResponseFormat = Annotated[
    ResponseFormatText | ResponseFormatJsonObject | ResponseFormatJsonSchema, Field(discriminator="type")
]
ReasoningEffort = Literal["none", "minimal", "low", "medium", "high", "xhigh", "max"]
Penalty = Annotated[float, Field(ge=-2.0, le=2.0)]

# OpenAI request fields this server refuses, and why; named in the 400 (docs/api.md).
REFUSED_FIELDS = {
    "tools": "tool calls are not supported yet",
    "tool_choice": "tool calls are not supported yet",
    "functions": "function calls are not supported",
    "function_call": "function calls are not supported",
    "audio": "audio output is not supported: the model writes text",
    "prediction": "predicted outputs are not supported",
    "web_search_options": "web search is not supported",
    "verbosity": "the answer's length follows the stages; use max_tokens or reasoning_effort",
    "moderation": "moderation is not applied by this server",
    "prompt_cache_options": "the prefix cache is always on and not configurable per request",
}


class ChatCompletionRequest(_Strict):
    model: str
    messages: Annotated[
        list[Message],
        Field(min_length=1, json_schema_extra={"contains": {"properties": {"role": {"const": "user"}}}}),
    ]
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None
    temperature: Annotated[float, Field(ge=0.0, le=2.0)] | None = None
    top_p: Annotated[float, Field(gt=0.0, le=1.0)] | None = None
    seed: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: Annotated[int, Field(ge=1)] | None = None  # n independent searches; at most --max-n
    stop: NonEmptyText | Annotated[list[NonEmptyText], Field(max_length=4)] | None = None  # on the final stage
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None
    logit_bias: dict[str, Annotated[float, Field(ge=-100.0, le=100.0)]] | None = None  # token id -> bias
    logprobs: bool | None = None  # of the final stage's tokens
    top_logprobs: Annotated[int, Field(ge=0, le=20)] | None = None
    response_format: ResponseFormat | None = None  # json formats apply to the final stage
    reasoning_effort: ReasoningEffort | None = None  # a strategy and beam width; `reasoning` wins
    # vLLM's sampling extensions, as its own server takes them.
    top_k: Annotated[int, Field(ge=-1)] | None = None  # 0 or -1: off
    min_p: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    repetition_penalty: Annotated[float, Field(gt=0.0, le=2.0)] | None = None
    reasoning: ReasoningOptions | None = None
    # Accepted, with no effect on the answer (docs/api.md says why for each).
    user: str | None = None
    metadata: dict[str, str] | None = None
    store: bool | None = None
    service_tier: str | None = None
    parallel_tool_calls: bool | None = None
    prompt_cache_key: str | None = None
    prompt_cache_retention: str | None = None
    safety_identifier: str | None = None
    modalities: list[Literal["text"]] | None = None


# -- responses -------------------------------------------------------------------------------


class _OmitNone(BaseModel):
    """Leaves out the fields named in `_omit_if_none` while they are None, as OpenAI's wire format
    does for deltas and optional extensions; other None fields are sent as null."""

    _omit_if_none: ClassVar[frozenset[str]] = frozenset()

    @model_serializer(mode="wrap")
    def _omit(self, handler: SerializerFunctionWrapHandler):  # unannotated: the schema stays the fields
        data = handler(self)
        return {k: v for k, v in data.items() if not (v is None and k in self._omit_if_none)}


class PromptTokensDetails(BaseModel):
    cached_tokens: int = 0


class CompletionTokensDetails(BaseModel):
    reasoning_tokens: int  # the chosen text of the stages before the final one


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int  # every candidate sampled, winners or not
    total_tokens: int  # prompt + completion, as in OpenAI's API
    judge_tokens: int  # extension: the verifier's (judge's) prompt and verdict tokens
    judge_calls: int  # extension: the verifier's engine calls (pairwise matches, pointwise scores)
    search_tokens: int  # extension: every token the search spent beyond the prompts (candidates and judge)
    prompt_tokens_details: PromptTokensDetails
    completion_tokens_details: CompletionTokensDetails


class ResponseMessage(_OmitNone):
    _omit_if_none = frozenset({"reasoning"})
    role: Literal["assistant"] = "assistant"
    content: str
    reasoning_content: str | None = None
    reasoning: str | None = None  # vLLM's current name for reasoning_content; both are sent


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int]


class TokenLogprobInfo(TopLogprob):
    top_logprobs: list[TopLogprob]


class ChoiceLogprobs(BaseModel):
    content: list[TokenLogprobInfo]  # the final stage's tokens


class Choice(BaseModel):
    index: int = 0
    message: ResponseMessage
    logprobs: ChoiceLogprobs | None = None
    finish_reason: AnswerFinish


class ReasoningInfo(_OmitNone):
    """The `reasoning` extension of a response: how it was searched, and the trace when asked."""

    _omit_if_none = frozenset({"trace", "traces", "effort"})
    strategy: str
    beam_width: int
    judge: str
    debias: bool
    verifier: str  # "self", or the separate verifier model's name
    verifier_form: str  # pairwise or pointwise, as it ran
    retraces: int = 0  # swires: times it went back to sample new captions (all choices)
    effort: str | None = None  # the reasoning_effort the strategy and width came from
    trace: dict[str, Any] | None = None  # of choice 0
    traces: list[dict[str, Any]] | None = None  # one per choice, when n > 1


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage
    reasoning: ReasoningInfo


class ChunkDelta(_OmitNone):
    """What one stream chunk adds to the message; `stage` (extension) names the stage it belongs to."""

    _omit_if_none = frozenset({"role", "content", "reasoning_content", "reasoning", "stage"})
    role: Literal["assistant"] | None = None
    content: str | None = None
    reasoning_content: str | None = None
    reasoning: str | None = None
    stage: str | None = None


class ChunkChoice(_OmitNone):
    _omit_if_none = frozenset({"logprobs"})
    index: int = 0
    delta: ChunkDelta
    logprobs: ChoiceLogprobs | None = None  # on the chunk that closes the final stage
    finish_reason: AnswerFinish | None = None


class ChatCompletionChunk(_OmitNone):
    """One SSE event of a streamed completion; the last chunk before [DONE] may carry only usage."""

    _omit_if_none = frozenset({"usage", "reasoning"})
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None
    reasoning: ReasoningInfo | None = None


class ErrorInfo(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    """OpenAI's error shape, as a response body and as an in-band stream event."""

    error: ErrorInfo


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "llava-o1"
    max_model_len: int


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
