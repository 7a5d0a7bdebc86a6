"""Clusters: group the faces of unsorted photos, then name, merge or dismiss the groups."""
from __future__ import annotations

from fastapi import APIRouter, File, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from facegnet.server.uploads import read_uploads

router = APIRouter(prefix="/api/clusters", tags=["clusters"])


class Name(BaseModel):
    name: str = Field(..., description="the person this group is")


class MergeGroups(BaseModel):
    groups: list[int] = Field(..., description="group ids; all join the first")


@router.post("", status_code=201, summary="Find and group every face of these photos")
async def create(request: Request, file: list[UploadFile] = File(...)) -> JSONResponse:
    state = request.app.state
    uploads = await read_uploads(file, state.max_upload_bytes, max_files=state.max_cluster_photos)
    job = await run_in_threadpool(state.clusters.create, uploads)
    return JSONResponse(job, status_code=201)


@router.get("", summary="Cluster jobs, newest first")
async def jobs(request: Request) -> dict:
    return {"jobs": await run_in_threadpool(request.app.state.clusters.list)}


@router.get("/{job_id}", summary="A job's faces and groups")
async def job(request: Request, job_id: str) -> dict:
    return await run_in_threadpool(request.app.state.clusters.get, job_id)


@router.delete("/{job_id}", summary="Delete a job and its photos")
async def delete(request: Request, job_id: str) -> dict:
    return await run_in_threadpool(request.app.state.clusters.delete, job_id)


@router.get("/{job_id}/faces/{face}/thumbnail", response_class=Response, summary="A face as a JPEG")
async def thumbnail(request: Request, job_id: str, face: int) -> Response:
    data = await run_in_threadpool(request.app.state.clusters.thumbnail, job_id, face)
    return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})


@router.post("/{job_id}/groups/{group}/name", summary="Name a group: enroll its faces as this person")
async def name(request: Request, job_id: str, group: int, body: Name) -> dict:
    return await run_in_threadpool(request.app.state.clusters.name, job_id, group, body.name)


@router.post("/{job_id}/merge", summary="Join groups into the first")
async def merge(request: Request, job_id: str, body: MergeGroups) -> dict:
    return await run_in_threadpool(request.app.state.clusters.merge, job_id, body.groups)


@router.post("/{job_id}/groups/{group}/dismiss", summary="Hide a group (not people to enroll)")
async def dismiss(request: Request, job_id: str, group: int) -> dict:
    return await run_in_threadpool(request.app.state.clusters.dismiss, job_id, group)
