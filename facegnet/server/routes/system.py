"""Health (no token), the page and the gallery's summary."""
from __future__ import annotations

from importlib import resources

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, Response

public = APIRouter(tags=["system"])
private = APIRouter(prefix="/api", tags=["system"])


@public.head("/health", include_in_schema=False)
@public.get("/health", summary="Liveness check (no token needed)")
async def health(request: Request) -> dict:
    """Up, whether a token is needed, and the identification threshold in force with the false-alarm rate per
    search it holds (how many people are enrolled is for token holders: ``/api/info``)."""
    in_force = await run_in_threadpool(request.app.state.service.threshold_in_force)
    return {"status": "ok", "auth": request.app.state.guard.required,
            "search_threshold": {"threshold": round(in_force.threshold, 4), "far_per_search": in_force.far_per_search,
                                 "source": in_force.source}}


@public.api_route("/", methods=["GET", "HEAD"], response_class=HTMLResponse, include_in_schema=False)
async def page() -> HTMLResponse:
    # The page holds no data: everything it shows comes from the API, with the token.
    html = resources.files("facegnet.server").joinpath("static/index.html").read_text(encoding="utf-8")
    return HTMLResponse(html, headers={"Cache-Control": "no-store"})


@public.api_route("/favicon.ico", methods=["GET", "HEAD"], include_in_schema=False)
async def favicon() -> Response:
    icon = resources.files("facegnet.server").joinpath("static/favicon.ico").read_bytes()
    return Response(icon, media_type="image/x-icon", headers={"Cache-Control": "public, max-age=86400"})


@private.get("/info", summary="Gallery summary: counts, model, index, threshold")
async def info(request: Request) -> dict:
    service = request.app.state.service
    data = await run_in_threadpool(service.info)
    data["max_upload_bytes"] = request.app.state.max_upload_bytes
    return data


def routers(guard) -> list[tuple[APIRouter, list]]:
    return [(public, []), (private, [Depends(guard)])]
