"""Errors in the OpenAI shape: {"error": {"message", "type", "param", "code"}}, never a bare 500."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from models.engine import EngineError, InvalidRequestError, PromptTooLongError
from server.schemas import REFUSED_FIELDS, ROLE_TAGS, ErrorInfo, ErrorResponse

log = logging.getLogger("llava_o1.server")

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    429: "rate_limit_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    503: "service_unavailable_error",
    504: "timeout_error",
}


class ServerShuttingDown(Exception):
    """The server stopped waiting for a request in flight: its shutdown timeout passed."""


class APIError(Exception):
    """An error answered to the client as-is (status, message, and which parameter was wrong)."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> ErrorResponse:
        return error_body(self.status, self.message, self.param, self.code)


def error_body(status: int, message: str, param: str | None = None, code: str | None = None) -> ErrorResponse:
    return ErrorResponse(
        error=ErrorInfo(message=message, type=_TYPES.get(status, "server_error"), param=param, code=code)
    )


def error_response(
    status: int, message: str, param: str | None = None, code: str | None = None, headers: dict | None = None
) -> JSONResponse:
    return JSONResponse(error_body(status, message, param, code).model_dump(), status_code=status, headers=headers)


async def send_error(send, status: int, message: str, code: str, headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
    """Answer an error straight from ASGI middleware, before any route runs."""
    body = error_body(status, message, None, code).model_dump_json().encode()
    start = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *headers]
    await send({"type": "http.response.start", "status": status, "headers": start})
    await send({"type": "http.response.body", "body": body})


INTERNAL_ERROR = APIError(500, "internal server error", code="internal_error")


def search_error(exc: BaseException, timeout_s: float) -> APIError | None:
    """The client's error for what a search can raise (its deadline, the engine's refusals), for the
    plain and the streaming path alike; None for anything unexpected."""
    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, TimeoutError):
        return APIError(
            504,
            f"the request did not finish within its deadline of {timeout_s:g} s; its search was stopped",
            code="timeout",
        )
    if isinstance(exc, ServerShuttingDown):
        return APIError(
            503, "the server shut down before the search finished; retry on another replica", code="shutting_down"
        )
    if isinstance(exc, PromptTooLongError):
        return APIError(400, str(exc), param="messages", code="context_length_exceeded")
    if isinstance(exc, InvalidRequestError):
        return APIError(400, str(exc), param=_request_param(exc.param), code="invalid_value")
    if isinstance(exc, EngineError):
        return APIError(503, f"the engine is unavailable: {exc}", code="engine_unavailable")
    return None


# Engine parameters that are request fields under the same name; any other refusal is of the prompt.
_SAMPLING_FIELDS = {"max_tokens", "temperature", "top_p", "seed", "stop", "n", "logit_bias"}
_SAMPLING_FIELDS |= {"presence_penalty", "frequency_penalty", "repetition_penalty", "top_k", "min_p"}
# And those the engine names its own way.
_RENAMED_FIELDS = {
    "token_logprobs": "top_logprobs",
    "json_schema": "response_format",
    "structured_outputs": "response_format",
}


def _request_param(engine_param: str | None) -> str:
    """The request field an engine refusal is about."""
    if engine_param in _RENAMED_FIELDS:
        return _RENAMED_FIELDS[engine_param]
    return engine_param if engine_param in _SAMPLING_FIELDS else "messages"


def _is_union_branch(part: object) -> bool:
    """pydantic's label for a branch of a union in an error's location: a type, not a field name."""
    return isinstance(part, str) and (
        not part.isidentifier() or part in ("str", "int", "float", "bool", "list", "dict")
    )


def _describe_validation(exc: RequestValidationError) -> tuple[str, str | None, str]:
    """The first problem of a request body, as (message, param, code)."""
    problem = exc.errors()[0]
    raw = [p for p in problem.get("loc", ()) if p != "body"]
    # Drop the branch names of tagged unions (messages.0.user.content is messages.0.content) and of
    # plain ones (stop.constrained-str is stop).
    loc = [
        str(p)
        for i, p in enumerate(raw)
        if not (p in ROLE_TAGS and i > 0 and isinstance(raw[i - 1], int)) and not _is_union_branch(p)
    ]
    kind = problem.get("type", "")
    if kind == "json_invalid":
        return (
            f"the request body is not valid JSON: {problem.get('ctx', {}).get('error', 'parse error')}",
            None,
            "invalid_json",
        )
    param = ".".join(loc) or None
    if kind == "extra_forbidden":
        if param in REFUSED_FIELDS:
            return f"'{param}' is not supported: {REFUSED_FIELDS[param]}", param, "unsupported_field"
        return f"unsupported field '{param}'", param, "unsupported_field"
    if kind == "missing":
        return f"missing required field '{param}'", param, "missing_field"
    return f"invalid value for '{param}': {problem.get('msg', 'invalid')}", param, "invalid_value"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError):
        headers = {**exc.headers, **({"WWW-Authenticate": "Bearer"} if exc.status == 401 else {})}
        return JSONResponse(exc.body().model_dump(), status_code=exc.status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        message, param, code = _describe_validation(exc)
        return error_response(400, message, param, code)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        return error_response(exc.status_code, str(exc.detail))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return JSONResponse(INTERNAL_ERROR.body().model_dump(), status_code=INTERNAL_ERROR.status)
