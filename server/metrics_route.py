"""GET /metrics: Prometheus text format; ours (llava_o1_*) plus vLLM's own (vllm:*) and process figures."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from server.auth import require_api_key
from server.state import ServerState, get_state

router = APIRouter()


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request, state: ServerState = Depends(get_state)):
    if state.settings.metrics_require_api_key:
        await require_api_key(request, state)
    body = generate_latest(state.metrics.registry) + generate_latest(REGISTRY)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
