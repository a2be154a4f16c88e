"""Turns a validated chat-completion request into a search job: messages, images, settings."""

from __future__ import annotations

from dataclasses import dataclass

from models.engine import ChatMessage, ChatPart
from server.errors import APIError
from server.images import load_image
from server.schemas import ChatCompletionRequest, ImagePart
from server.settings import ServerSettings
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
    )


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
    if not any(_text_of(m).strip() for m in user_messages):
        raise APIError(
            400, "the user messages hold no text: ask a question about the image", param="messages", code="no_text"
        )
    return converted


def _text_of(message: ChatMessage) -> str:
    if isinstance(message.content, str):
        return message.content
    return " ".join(p.text for p in message.content if p.type == "text")


def _search_config(request: ChatCompletionRequest, settings: ServerSettings) -> SearchConfig:
    options = request.reasoning
    changes: dict = {}
    if options is not None:
        for name in ("strategy", "judge", "debias", "stage_prompt", "max_tokens_per_stage", "beam_width"):
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
    try:
        return settings.search.with_(**changes)
    except ValueError as exc:
        raise APIError(400, str(exc), param="reasoning", code="invalid_value") from exc
