"""OpenAI chat-completion request and response models, field by field, plus our extensions.

Extensions: the request's `reasoning` object (clients send it through `extra_body`); in
responses, `message.reasoning_content`, `delta.stage`, `usage.judge_tokens` and `reasoning`.
Unknown request fields are refused (400) rather than silently ignored.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer

from stage_search.config import JudgeMode, StagePrompt, StrategyName
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
    stage_prompt: StagePrompt | None = None
    max_tokens_per_stage: Annotated[int, Field(ge=1)] | None = None
    trace: bool = False
    output: Literal["split", "tagged"] = "split"
    timeout: Annotated[float, Field(gt=0)] | None = None  # seconds; default: the server's --request-timeout


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
    reasoning: ReasoningOptions | None = None
    # Accepted for compatibility only with the value that means "nothing special".
    n: Literal[1] | None = None
    user: str | None = None


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


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int  # prompt + completion, as in OpenAI's API
    judge_tokens: int  # extension: the pairwise judge's prompt and verdict tokens
    prompt_tokens_details: PromptTokensDetails


class ResponseMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str
    reasoning_content: str | None = None


class Choice(BaseModel):
    index: int = 0
    message: ResponseMessage
    finish_reason: AnswerFinish


class ReasoningInfo(_OmitNone):
    """The `reasoning` extension of a response: how it was searched, and the trace when asked."""

    _omit_if_none = frozenset({"trace"})
    strategy: str
    beam_width: int
    judge: str
    debias: bool
    trace: dict[str, Any] | None = None


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

    _omit_if_none = frozenset({"role", "content", "reasoning_content", "stage"})
    role: Literal["assistant"] | None = None
    content: str | None = None
    reasoning_content: str | None = None
    stage: str | None = None


class ChunkChoice(BaseModel):
    index: int = 0
    delta: ChunkDelta
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
