"""Health (no token), the page and the gallery's summary."""
from __future__ import annotations

from importlib import resources

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse

public = APIRouter(tags=["system"])
private = APIRouter(prefix="/api", tags=["system"])


@public.get("/health", summary="Liveness check (no token needed)")
async def health(request: Request) -> dict:
    return {"status": "ok", "auth": request.app.state.guard.required}


@public.get("/", response_class=HTMLResponse, include_in_schema=False)
async def page() -> HTMLResponse:
    # The page holds no data: everything it shows comes from the API, with the token.
    html = resources.files("facegnet.server").joinpath("static/index.html").read_text(encoding="utf-8")
    return HTMLResponse(html, headers={"Cache-Control": "no-store"})


@private.get("/info", summary="Gallery summary: counts, model, index, threshold")
async def info(request: Request) -> dict:
    service = request.app.state.service
    data = await run_in_threadpool(service.info)
    data["max_upload_bytes"] = request.app.state.max_upload_bytes
    return data


def routers(guard) -> list[tuple[APIRouter, list]]:
    return [(public, []), (private, [Depends(guard)])]
