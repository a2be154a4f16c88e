"""The header a client of this server sends for its API key (server/auth.py checks it). A module of
its own, free of FastAPI, so that clients (run-batch, the benchmarks) start fast."""

from __future__ import annotations


def auth_headers(api_key: str | None) -> dict[str, str]:
    """The bearer-token header for a server that wants one (none without a key)."""
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}
