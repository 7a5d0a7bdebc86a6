"""The browser camera: one frame at a time per session, tracked and named as ``identify --camera`` does."""
from __future__ import annotations

from fastapi import APIRouter, File, Request, UploadFile
from fastapi.concurrency import run_in_threadpool

from facegnet.server.uploads import decode, read_upload

router = APIRouter(prefix="/api/live", tags=["live"])


@router.post("/{session}/frames", summary="Send one camera frame (JPEG); get the tracked, named faces")
async def frame(request: Request, session: str, file: UploadFile = File(...)) -> dict:
    state = request.app.state
    upload = await read_upload(file, state.max_upload_bytes)

    def work() -> dict:
        return state.live.frame(session, decode(upload, state.service.max_side))

    return await run_in_threadpool(work)


@router.delete("/{session}", summary="End a session (its faces leave)")
async def end(request: Request, session: str) -> dict:
    return await run_in_threadpool(request.app.state.live.end, session)
