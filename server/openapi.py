"""The published OpenAPI schema (`/openapi.json`), with this server's own limits written in.

FastAPI derives the schema from the request models, which know nothing of the running server: which
model it serves, its largest beam width, its token limits. Clients and fuzzers that read the schema
would then send requests the server refuses; with the limits written in, the schema says what the
server accepts.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from server.settings import ServerSettings


def publish_limits(app: FastAPI, settings: ServerSettings, model_names: list[str]) -> None:
    """Make `app.openapi()` describe what this server accepts."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            schemas = schema["components"]["schemas"]
            request = schemas["ChatCompletionRequest"]["properties"]
            request["model"]["enum"] = list(model_names)
            stages, max_request_tokens = len(settings.search.stages), settings.max_request_tokens
            _limit_integer(request["n"], minimum=1, maximum=settings.max_n)
            for name in ("max_tokens", "max_completion_tokens"):
                _limit_integer(request[name], minimum=stages, maximum=max_request_tokens)
            reasoning = schemas["ReasoningOptions"]["properties"]
            _limit_integer(reasoning["beam_width"], minimum=1, maximum=settings.max_beam_width)
            _limit_integer(reasoning["max_tokens_per_stage"], minimum=1, maximum=max_request_tokens)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way to customise it


def _limit_integer(field: dict[str, Any], *, minimum: int, maximum: int | None) -> None:
    """Bound the integer branch of a field (plain, or one branch of an anyOf)."""
    for branch in field.get("anyOf", [field]):
        if branch.get("type") == "integer":
            branch["minimum"] = minimum
            if maximum is not None:
                branch["maximum"] = maximum
