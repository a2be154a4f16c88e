"""Server-sent events framing: one `data:` line per event, as OpenAI's streaming API sends them."""

from __future__ import annotations

from pydantic import BaseModel


def sse_event(payload: BaseModel | str) -> str:
    """One SSE event carrying a wire object as JSON, or a bare string such as [DONE]."""
    data = payload if isinstance(payload, str) else payload.model_dump_json()
    return f"data: {data}\n\n"


SSE_DONE = sse_event("[DONE]")
