"""Identify the faces of a photo; verify two photos."""
from __future__ import annotations

from fastapi import APIRouter, File, Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool

from facegnet.server.uploads import read_upload

router = APIRouter(prefix="/api", tags=["recognition"])


@router.post("/identify", summary="Every face of a photo: box, best person (or 'unknown'), similarity")
async def identify(request: Request, file: UploadFile = File(...),
                   top_k: int = Query(1, ge=1, le=20, description="candidates per face")) -> dict:
    state = request.app.state
    upload = await read_upload(file, state.max_upload_bytes)
    return await run_in_threadpool(state.service.identify, upload, top_k)


@router.post("/verify", summary="Are the largest faces of photos a and b the same person?")
async def verify(request: Request, a: UploadFile = File(...), b: UploadFile = File(...)) -> dict:
    state = request.app.state
    first = await read_upload(a, state.max_upload_bytes, "a")
    second = await read_upload(b, state.max_upload_bytes, "b")
    return await run_in_threadpool(state.service.verify, first, second)
