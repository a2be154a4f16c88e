"""GET /: the playground, one static page (server/playground.html) that asks about an image and
shows each stage as it is decided, then the search trace. `serve --no-playground` leaves it out."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

PAGE = Path(__file__).with_name("playground.html")

router = APIRouter()


@router.get("/", include_in_schema=False)
async def playground() -> HTMLResponse:
    # Open, like /docs: the page holds no secret, and asks for the API key to call the API itself.
    return HTMLResponse(PAGE.read_text(), headers={"Cache-Control": "no-cache"})
