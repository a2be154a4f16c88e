"""Bearer-token check for the API routes (a no-op when the server has no API key)."""

from __future__ import annotations

import hmac

from fastapi import Depends, Request

from server.errors import APIError
from server.state import ServerState, get_state


async def require_api_key(request: Request, state: ServerState = Depends(get_state)) -> None:
    expected = state.settings.api_key
    if not expected:
        return
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise APIError(401, "missing API key: send 'Authorization: Bearer <key>'", code="missing_api_key")
    if not hmac.compare_digest(token.strip().encode(), expected.encode()):
        raise APIError(401, "incorrect API key", code="invalid_api_key")
