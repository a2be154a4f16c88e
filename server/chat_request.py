"""Turns a validated chat-completion request into a search job: messages, images, settings."""

from __future__ import annotations

from dataclasses import dataclass

from models.engine import ChatMessage, ChatPart, SamplingControls
from server.errors import APIError
from server.images import load_image
from server.schemas import ChatCompletionRequest, ImagePart, ResponseFormatJsonObject, ResponseFormatJsonSchema
from server.settings import ServerSettings
from stage_search.answer_options import ONE_PIECE_FINAL, AnswerOptions
from stage_search.config import SearchConfig


@dataclass(frozen=True)
class ChatJob:
    messages: list[ChatMessage]
    config: SearchConfig
    output: str  # "split" or "tagged"
    trace: bool
    include_usage: bool
    auto_beam_width: bool  # beam_width "auto": the route sets it from the load at admission
    timeout_s: float
    n: int = 1  # independent searches, one per choice
    effort: str | None = None  # the reasoning_effort asked for, if any


async def to_chat_job(request: ChatCompletionRequest, settings: ServerSettings, model_names: list[str]) -> ChatJob:
    if request.model not in model_names:
        raise APIError(
            404,
            f"model '{request.model}' does not exist; this server serves {', '.join(model_names)}",
            param="model",
            code="model_not_found",
        )
    messages = await _messages(request, settings)
    return ChatJob(
        messages=messages,
        config=_search_config(request, settings),
        output=request.reasoning.output if request.reasoning else "split",
        trace=bool(request.reasoning and request.reasoning.trace),
        include_usage=bool(request.stream_options and request.stream_options.include_usage),
        auto_beam_width=bool(request.reasoning and request.reasoning.beam_width == "auto"),
        timeout_s=(
            request.reasoning.timeout if request.reasoning and request.reasoning.timeout else settings.request_timeout_s
        ),
        n=_choices(request, settings),
        effort=request.reasoning_effort,
    )


def _choices(request: ChatCompletionRequest, settings: ServerSettings) -> int:
    n = request.n or 1
    if n > settings.max_n:
        raise APIError(400, f"n must be at most {settings.max_n}", param="n", code="invalid_value")
    return n


async def _messages(request: ChatCompletionRequest, settings: ServerSettings) -> list[ChatMessage]:
    images = sum(isinstance(p, ImagePart) for m in request.messages if isinstance(m.content, list) for p in m.content)
    if images > settings.images.max_images:
        raise APIError(
            400,
            f"{images} images in one request; the limit is {settings.images.max_images}",
            param="messages",
            code="too_many_images",
        )
    converted: list[ChatMessage] = []
    for i, message in enumerate(request.messages):
        # The request model has checked the content: present for system and user, images only from the user.
        role = "system" if message.role == "developer" else message.role
        if message.content is None or isinstance(message.content, str):
            converted.append(ChatMessage(role, message.content or ""))
            continue
        parts = []
        for j, part in enumerate(message.content):
            if isinstance(part, ImagePart):
                param = f"messages[{i}].content[{j}].image_url"
                parts.append(ChatPart.of_image(await load_image(part.image_url.url, settings.images, param)))
            else:
                parts.append(ChatPart.of_text(part.text))
        converted.append(ChatMessage(role, tuple(parts)))
    user_messages = [m for m in converted if m.role == "user"]
    if not user_messages:
        raise APIError(
            400, "the conversation needs at least one user message", param="messages", code="no_user_message"
        )
    if not any(m.text.strip() for m in user_messages):
        raise APIError(
            400, "the user messages hold no text: ask a question about the image", param="messages", code="no_text"
        )
    return converted


# reasoning_effort -> (strategy, beam width); None: the server's --max-beam-width. Widths are
# capped at --max-beam-width. The `reasoning` object's own fields win over these.
EFFORTS: dict[str, tuple[str, int | None]] = {
    "none": ("none", 1),
    "minimal": ("none", 1),
    "low": ("stage", 2),
    "medium": ("stage", 4),
    "high": ("stage", 8),
    "xhigh": ("stage", None),
    "max": ("stage", None),
}


def _search_config(request: ChatCompletionRequest, settings: ServerSettings) -> SearchConfig:
    options = request.reasoning
    changes: dict = {}
    if request.reasoning_effort is not None:
        strategy, width = EFFORTS[request.reasoning_effort]
        changes["strategy"] = strategy
        changes["beam_width"] = min(width or settings.max_beam_width, settings.max_beam_width)
    if options is not None:
        for name in (
            "strategy",
            "judge",
            "debias",
            "verifier_form",
            "stage_prompt",
            "max_tokens_per_stage",
            "beam_width",
        ):
            value = getattr(options, name)
            if value is not None and value != "auto":
                changes[name] = value
    limit = settings.max_request_tokens
    per_stage = changes.get("max_tokens_per_stage")
    if limit is not None and per_stage is not None and per_stage > limit:
        raise APIError(
            400,
            f"max_tokens_per_stage must be at most {limit}",
            param="reasoning.max_tokens_per_stage",
            code="invalid_value",
        )
    beam_width = changes.get("beam_width", settings.search.beam_width)
    if not 1 <= beam_width <= settings.max_beam_width:
        raise APIError(
            400,
            f"beam_width must be between 1 and {settings.max_beam_width}",
            param="reasoning.beam_width",
            code="invalid_value",
        )
    for name in ("temperature", "top_p", "seed"):
        value = getattr(request, name)
        if value is not None:
            changes[name] = value
    max_tokens = request.max_completion_tokens or request.max_tokens
    if max_tokens is not None:
        stages = len(settings.search.stages)
        if max_tokens < stages or (limit is not None and max_tokens > limit):
            raise APIError(
                400,
                f"max_tokens must be at least {stages} (one token for each stage) and at most {limit}",
                param="max_tokens",
                code="invalid_value",
            )
        changes["max_tokens"] = max_tokens
    changes["answer"] = _answer_options(request)
    try:
        config = settings.search.with_(**changes)
    except ValueError as exc:
        raise APIError(400, str(exc), param="reasoning", code="invalid_value") from exc
    if config.answer.needs_one_piece_final() and config.branches and config.strategy not in ONE_PIECE_FINAL:
        param = "response_format" if config.answer.json_schema is not None else "logprobs"
        raise APIError(
            400,
            f"{param} applies to the final stage, which strategy '{config.strategy}' does not sample as one "
            f"piece; use strategy {' or '.join(ONE_PIECE_FINAL)}",
            param=param,
            code="invalid_value",
        )
    return config


def _answer_options(request: ChatCompletionRequest) -> AnswerOptions:
    """The client's sampling controls, stop strings, log-probabilities and format."""
    bias: list[tuple[int, float]] = []
    for token, value in (request.logit_bias or {}).items():
        if not token.strip().isdigit():
            raise APIError(
                400, f"logit_bias keys are token ids; got '{token}'", param="logit_bias", code="invalid_value"
            )
        bias.append((int(token), value))
    if request.top_logprobs is not None and not request.logprobs:
        raise APIError(400, "top_logprobs needs logprobs: true", param="top_logprobs", code="invalid_value")
    stop = (request.stop,) if isinstance(request.stop, str) else tuple(request.stop or ())
    schema: dict | None = None
    if isinstance(request.response_format, ResponseFormatJsonObject):
        schema = {}
    elif isinstance(request.response_format, ResponseFormatJsonSchema):
        schema = request.response_format.json_schema.schema_ or {}
    controls = SamplingControls(
        presence_penalty=request.presence_penalty or 0.0,
        frequency_penalty=request.frequency_penalty or 0.0,
        repetition_penalty=request.repetition_penalty or 1.0,
        top_k=max(request.top_k or 0, 0),
        min_p=request.min_p or 0.0,
        logit_bias=tuple(bias),
    )
    return AnswerOptions(
        controls=controls,
        stop=stop,
        logprobs=(request.top_logprobs or 0) if request.logprobs else None,
        json_schema=schema,
    )
