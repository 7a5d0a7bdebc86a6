"""CompreFace's recognition API (the part Double Take and other home-camera clients call), over the gallery.

- ``POST /api/v1/recognition/recognize`` (multipart ``file``; query ``limit``, ``det_prob_threshold``,
  ``prediction_count``, ``face_plugins``) → ``{"result": [{"box": {...}, "subjects": [...]}]}``; a photo
  without a face → 400 ``{"code": 28, "message": "No face is found in the given image"}``;
- ``POST /api/v1/recognition/faces?subject=NAME`` (multipart ``file``) enrolls the photo's largest face;
- ``GET /api/v1/recognition/faces`` lists templates, ``GET /api/v1/recognition/subjects`` the people;
- ``DELETE /api/v1/recognition/faces?subject=NAME`` removes a person, ``DELETE .../faces/{image_id}`` a template.

The key (header ``x-api-key``, or ``Authorization: Bearer``) is the server's token. Similarities are
facegnet's cosine similarities mapped by :mod:`facegnet.server.scores`, so that a client's 0.60 is facegnet's
identification threshold. Errors answer in CompreFace's shape, ``{"code": N, "message": "<one line>"}``.
"""
from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, File, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from facegnet.errors import FacegnetError, NoFaceError
from facegnet.server.auth import bearer_key
from facegnet.server.errors import ApiError, one_line, status_for
from facegnet.server.scores import anchors, client_score
from facegnet.server.uploads import read_upload

router = APIRouter(prefix="/api/v1/recognition", tags=["CompreFace-compatible"])

NO_FACE_CODE = 28
NO_FACE_MESSAGE = "No face is found in the given image"
#: CompreFace's face plugins facegnet can answer: MTCNN's five landmarks.
SUPPORTED_PLUGINS = ("landmarks",)
#: What a client sends when no plugin is configured (Double Take writes its unset setting into the URL).
NO_PLUGINS = {"", "undefined", "null", "none"}


class CompatError(Exception):
    """An error in CompreFace's shape."""

    def __init__(self, status: int, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code = status, one_line(message), status if code is None else code


def _error(status: int, message: str, code: int | None = None) -> JSONResponse:
    return JSONResponse({"code": status if code is None else code, "message": one_line(message)}, status_code=status)


async def _answer(request: Request, work: Callable[[], Any], status: int = 200,
                  change: bool = False) -> JSONResponse:
    """Check the key (``change``: the request changes the gallery), run ``work`` off the event loop, and answer
    every failure in CompreFace's shape."""
    key = request.headers.get("x-api-key") or bearer_key(request)
    refused = request.app.state.guard.refusal(
        key, change, forbidden="this key may only recognize: adding and removing faces need a key with the enroll role",
        missing="missing or wrong API key: send the server's token in the header 'x-api-key'")
    if refused:
        return _error(*refused)
    try:
        answer = await work() if inspect.iscoroutinefunction(work) else await run_in_threadpool(work)
        return JSONResponse(answer, status_code=status)
    except CompatError as exc:
        return _error(exc.status, exc.message, exc.code)
    except ApiError as exc:
        return _error(exc.status, exc.message)
    except NoFaceError:
        return _error(400, NO_FACE_MESSAGE, NO_FACE_CODE)
    except FacegnetError as exc:
        return _error(status_for(exc), str(exc))


def _number(value: str | None, name: str, default: float, low: float, high: float, integer: bool = False) -> float:
    """A query parameter as a number in [low, high]; CompatError 400 otherwise."""
    if value is None or value == "":
        return default
    try:
        number = int(value) if integer else float(value)
    except ValueError:
        raise CompatError(400, f"{name} must be {'an integer' if integer else 'a number'}, not {value!r}") from None
    if not low <= number <= high:
        raise CompatError(400, f"{name} must be between {low:g} and {high:g}, not {value}")
    return number


def plugins(value: str | None) -> list[str]:
    """The requested face plugins; CompatError 400 naming those facegnet does not have (age, gender, mask...)."""
    if value is None or value.strip().lower() in NO_PLUGINS:
        return []
    asked = [p.strip().lower() for p in value.split(",") if p.strip()]
    missing = [p for p in asked if p not in SUPPORTED_PLUGINS]
    if missing:
        raise CompatError(400, f"face plugin(s) not available in facegnet: {', '.join(missing)} (available: "
                          f"{', '.join(SUPPORTED_PLUGINS)}); remove them from face_plugins")
    return asked


async def _file(request: Request, file: UploadFile | None):
    if file is None:
        raise CompatError(400, "missing multipart field 'file': send the photo as 'file'")
    return await read_upload(file, request.app.state.max_upload_bytes)


def _subject(value: str | None) -> str:
    if value is None or not value.strip():
        raise CompatError(400, "missing query parameter 'subject'")
    return value


# ---------------------------------------------------------------------------------------------- recognition
@router.post("/recognize", summary="Every face of a photo with its most similar subjects (CompreFace's answer)")
async def recognize(request: Request, file: UploadFile | None = File(None), limit: str | None = None,
                    det_prob_threshold: str | None = None, prediction_count: str | None = None,
                    face_plugins: str | None = None) -> JSONResponse:
    async def work() -> dict:
        wanted = plugins(face_plugins)
        max_faces = int(_number(limit, "limit", 0, 0, 1000, integer=True))
        min_probability = _number(det_prob_threshold, "det_prob_threshold", 0.0, 0.0, 1.0)
        count = int(_number(prediction_count, "prediction_count", 1, 1, 100, integer=True))
        upload = await _file(request, file)
        service = request.app.state.service
        _, matches = await run_in_threadpool(service.recognize, upload, count)
        verification = float(service.recognizer.card.threshold)
        result = []
        for match in matches:
            face = match.face
            if face is None or face.score < min_probability:
                continue
            unknown_below, match_at = anchors(match.threshold, verification)
            x1, y1, x2, y2 = (round(float(v)) for v in face.box)
            entry: dict[str, Any] = {
                "box": {"probability": round(float(face.score), 5), "x_min": x1, "y_min": y1, "x_max": x2,
                        "y_max": y2},
                "subjects": [{"subject": c.name, "similarity": client_score(c.similarity, match_at, unknown_below)}
                             for c in match.candidates[:count]],
            }
            if "landmarks" in wanted:
                entry["landmarks"] = [[round(float(x)), round(float(y))] for x, y in face.landmarks]
            result.append(entry)
            if max_faces and len(result) >= max_faces:
                break
        if not result:
            raise NoFaceError("no face found", upload.name)
        return {"result": result}

    return await _answer(request, work)


# ---------------------------------------------------------------------------------------------- face collection
@router.post("/faces", summary="Enroll the largest face of a photo as ?subject=NAME")
async def add_face(request: Request, file: UploadFile | None = File(None), subject: str | None = None,
                   det_prob_threshold: str | None = None) -> JSONResponse:
    async def work() -> dict:
        name = _subject(subject)
        _number(det_prob_threshold, "det_prob_threshold", 0.0, 0.0, 1.0)  # accepted; enrolment has its own rules
        upload = await _file(request, file)
        report = await run_in_threadpool(request.app.state.service.enroll, name, [upload])
        if report["added"]:
            return {"image_id": str(report["added"][0]["template"]), "subject": report["name"]}
        existing = report["existing"][0]
        if existing["name"] != report["name"]:
            raise CompatError(409, f"{upload.name}: this photo is already enrolled as {existing['name']!r}")
        return {"image_id": str(existing["template"]), "subject": report["name"]}

    return await _answer(request, work, status=201, change=True)


@router.get("/faces", summary="Enrolled faces (templates), by page")
async def list_faces(request: Request, subject: str | None = None, page: str | None = None,
                     size: str | None = None) -> JSONResponse:
    def work() -> dict:
        page_number = int(_number(page, "page", 0, 0, 1e9, integer=True))
        page_size = int(_number(size, "size", 20, 1, 10000, integer=True))
        service = request.app.state.service
        names = [subject] if subject else [p["name"] for p in service.people()]
        faces = []
        for name in names:
            try:
                templates = service.person(name)["templates"]
            except ApiError:  # no such subject: an empty list, as CompreFace answers
                templates = []
            faces += [{"image_id": str(t["id"]), "subject": name} for t in templates]
        total = len(faces)
        return {"faces": faces[page_number * page_size:(page_number + 1) * page_size], "page_number": page_number,
                "page_size": page_size, "total_pages": -(-total // page_size), "total_elements": total}

    return await _answer(request, work)


@router.get("/subjects", summary="Enrolled subjects (people)")
async def list_subjects(request: Request) -> JSONResponse:
    return await _answer(request, lambda: {"subjects": [p["name"] for p in request.app.state.service.people()]})


@router.delete("/faces", summary="Remove every face of ?subject=NAME")
async def delete_subject(request: Request, subject: str | None = None) -> JSONResponse:
    def work() -> dict:
        name = _subject(subject)  # never the whole gallery: CompreFace deletes all faces without a subject
        try:
            return {"deleted": request.app.state.service.remove_person(name)["templates"]}
        except ApiError as exc:
            if exc.status == 404:  # nothing to delete is not an error for a client that cleans up
                return {"deleted": 0}
            raise

    return await _answer(request, work, change=True)


@router.delete("/faces/{image_id}", summary="Remove one face (template) by its image_id")
async def delete_face(request: Request, image_id: str) -> JSONResponse:
    def work() -> dict:
        if not image_id.isdigit():
            raise CompatError(404, f"no face with image_id {image_id!r}")
        service = request.app.state.service
        for person in service.people():
            if any(t["id"] == int(image_id) for t in service.person(person["name"])["templates"]):
                service.remove_template(person["name"], int(image_id))
                return {"image_id": image_id, "subject": person["name"]}
        raise CompatError(404, f"no face with image_id {image_id!r}")

    return await _answer(request, work, change=True)
