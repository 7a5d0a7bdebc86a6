"""People: list, enroll photos, rename, merge, remove a person or one template, face thumbnails."""
from __future__ import annotations

import re

from fastapi import APIRouter, File, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from facegnet.server.errors import ApiError
from facegnet.server.people import clean_name, slash_message
from facegnet.server.uploads import read_uploads

router = APIRouter(prefix="/api/people", tags=["people"])


class Rename(BaseModel):
    name: str = Field(..., description="the new name")


class Merge(BaseModel):
    into: str = Field(..., description="the person who receives the templates")


@router.get("", summary="Every enrolled person and their number of templates")
async def list_people(request: Request) -> dict:
    return {"people": await run_in_threadpool(request.app.state.service.people)}


@router.get("/{name}", summary="One person's templates")
async def person(request: Request, name: str) -> dict:
    return await run_in_threadpool(request.app.state.service.person, name)


@router.post("/{name}/photos", status_code=201,
             summary="Enroll the largest face of each photo as this person (all photos or none)")
async def enroll(request: Request, name: str, file: list[UploadFile] = File(...)) -> JSONResponse:
    state = request.app.state
    clean_name(name)  # a bad name is refused before the photos are read
    uploads = await read_uploads(file, state.max_upload_bytes)
    report = await run_in_threadpool(state.service.enroll, name, uploads)
    return JSONResponse(report, status_code=201 if report["added"] else 200)


@router.patch("/{name}", summary="Rename a person")
async def rename(request: Request, name: str, body: Rename) -> dict:
    return await run_in_threadpool(request.app.state.service.rename, name, body.name)


@router.post("/{name}/merge", summary="Move every template of this person to another and remove this one")
async def merge(request: Request, name: str, body: Merge) -> dict:
    return await run_in_threadpool(request.app.state.service.merge, name, body.into)


@router.delete("/{name}", summary="Remove a person, their templates and their stored photos")
async def remove(request: Request, name: str) -> dict:
    return await run_in_threadpool(request.app.state.service.remove_person, name)


@router.delete("/{name}/templates/{template_id}", summary="Remove one template (and the person with their last)")
async def remove_template(request: Request, name: str, template_id: int) -> dict:
    return await run_in_threadpool(request.app.state.service.remove_template, name, template_id)


@router.get("/{name}/templates/{template_id}/thumbnail", summary="The template's face as a JPEG",
            response_class=Response)
async def thumbnail(request: Request, name: str, template_id: int) -> Response:
    data = await run_in_threadpool(request.app.state.service.thumbnail, name, template_id)
    return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})


# A name with '/' arrives split over several path segments and matches none of the routes above: answer as
# a rename to such a name does (422), not "no such endpoint". Declared last, it catches nothing else.
_ENDPOINTS = re.compile(r"^(?P<name>.+?)(?:/photos|/merge|/templates/[^/]+(?:/thumbnail)?)?$")


@router.api_route("/{rest:path}", methods=["GET", "POST", "PATCH", "DELETE"], include_in_schema=False)
async def name_with_slash(request: Request, rest: str) -> dict:
    name = _ENDPOINTS.match(rest).group("name") if rest else ""
    if "/" in name:
        raise ApiError(422, slash_message(name))
    raise ApiError(404 if request.method == "GET" or not name else 405,
                   f"no such endpoint: {request.method} {request.url.path}")
