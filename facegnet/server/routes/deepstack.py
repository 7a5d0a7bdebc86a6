"""DeepStack's face API over the gallery, for clients written for DeepStack (Double Take, Home Assistant...).

- ``POST /v1/vision/face/recognize`` (form ``image``; optional ``min_confidence``) →
  ``{"success": true, "predictions": [{"userid", "confidence", "x_min", "y_min", "x_max", "y_max"}]}``;
  a photo without a face answers ``predictions: []``, as DeepStack does;
- ``POST /v1/vision/face/register`` (``image``, more photos under any other field name, ``userid``);
- ``POST /v1/vision/face/delete`` (``userid``) and ``POST /v1/vision/face/list``.

The key is the server's token, sent as the form field ``api_key`` (or ``Authorization: Bearer``). Confidences
are facegnet's similarities mapped by :mod:`facegnet.server.scores`: 0.60 is the identification threshold in
force, and ``userid`` is ``unknown`` below ``min_confidence`` (default 0.60, so facegnet's own decision).
Errors answer ``{"success": false, "error": "<one line>"}``.
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, UploadFile

from facegnet.errors import FacegnetError, NoFaceError
from facegnet.gallery import UNKNOWN
from facegnet.server.auth import bearer_key
from facegnet.server.errors import ApiError, one_line, status_for
from facegnet.server.scores import MATCH_SCORE, anchors, client_score
from facegnet.server.uploads import read_upload

router = APIRouter(prefix="/v1/vision/face", tags=["DeepStack-compatible"])


class _Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, one_line(message)


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"success": False, "error": one_line(message)}, status_code=status)


async def _answer(request: Request, work: Callable[[FormData], Awaitable[dict[str, Any]]],
                  change: bool = False) -> JSONResponse:
    """Read the form, check the key (``change``: the request changes the gallery), run ``work`` and answer
    every failure in DeepStack's shape."""
    try:
        form = await request.form()
    except Exception as exc:  # noqa: BLE001 - a body that is not a form
        return _error(400, f"the request must be a multipart or urlencoded form ({type(exc).__name__})")
    key = form.get("api_key")
    refused = request.app.state.guard.refusal(
        key if isinstance(key, str) else bearer_key(request), change,
        forbidden="this api_key may only recognize: register and delete need a key with the enroll role",
        missing="missing or wrong api_key: send the server's token as the form field 'api_key'")
    if refused:
        return _error(*refused)
    try:
        return JSONResponse({"success": True, **(await work(form))})
    except _Refused as exc:
        return _error(exc.status, exc.message)
    except ApiError as exc:
        return _error(exc.status, exc.message)
    except FacegnetError as exc:
        return _error(status_for(exc), str(exc))
    finally:
        await form.close()


def _userid(form: FormData) -> str:
    userid = form.get("userid")
    if not isinstance(userid, str) or not userid.strip():
        raise _Refused(400, "userid not specified")
    return userid


def _min_confidence(form: FormData) -> float:
    value = form.get("min_confidence")
    if value is None or value == "":
        return MATCH_SCORE
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise _Refused(400, f"min_confidence must be a number between 0 and 1, not {value!r}") from None
    if not 0.0 <= number <= 1.0:
        raise _Refused(400, f"min_confidence must be between 0 and 1, not {value}")
    return number


@router.post("/recognize", summary="Every face of a photo: userid (or 'unknown'), confidence and box (DeepStack)")
async def recognize(request: Request) -> JSONResponse:
    async def work(form: FormData) -> dict[str, Any]:
        image = form.get("image")
        if not isinstance(image, UploadFile):
            raise _Refused(400, "No valid image file found: send the photo as the form field 'image'")
        min_confidence = _min_confidence(form)
        upload = await read_upload(image, request.app.state.max_upload_bytes, "image")
        service = request.app.state.service
        try:
            _, matches = await run_in_threadpool(service.recognize, upload, 1)
        except NoFaceError:
            matches = []
        verification = float(service.recognizer.card.threshold)
        predictions = []
        for match in matches:
            unknown_below, match_at = anchors(match.threshold, verification)
            confidence = client_score(match.similarity, match_at, unknown_below) if match.candidates else 0.0
            best = match.candidates[0].name if match.candidates else UNKNOWN
            x1, y1, x2, y2 = (round(float(v)) for v in match.face.box)
            predictions.append({"confidence": confidence, "userid": best if confidence >= min_confidence else UNKNOWN,
                                "x_min": x1, "y_min": y1, "x_max": x2, "y_max": y2})
        return {"predictions": predictions}

    return await _answer(request, work)


@router.post("/register", summary="Enroll the largest face of each photo as userid (DeepStack)")
async def register(request: Request) -> JSONResponse:
    async def work(form: FormData) -> dict[str, Any]:
        userid = _userid(form)
        files = [(field, value) for field, value in form.multi_items() if isinstance(value, UploadFile)]
        if not files:
            raise _Refused(400, "No valid image file found: send the photo as the form field 'image'")
        limit = request.app.state.max_upload_bytes
        uploads = [await read_upload(value, limit, field) for field, value in files]
        report = await run_in_threadpool(request.app.state.service.enroll, userid, uploads)
        others = [e for e in report["existing"] if e["name"] != report["name"]]
        if others:
            raise _Refused(409, f"{others[0]['file']}: this photo is already enrolled as {others[0]['name']!r}")
        return {"message": "face added"}

    return await _answer(request, work, change=True)


@router.post("/delete", summary="Remove userid and every face of theirs (DeepStack)")
async def delete(request: Request) -> JSONResponse:
    async def work(form: FormData) -> dict[str, Any]:
        userid = _userid(form)
        try:
            await run_in_threadpool(request.app.state.service.remove_person, userid)
        except ApiError as exc:
            if exc.status != 404:  # removing someone who is not there leaves the gallery as asked
                raise
        return {}

    return await _answer(request, work, change=True)


@router.post("/list", summary="The enrolled userids (DeepStack)")
async def list_faces(request: Request) -> JSONResponse:
    async def work(form: FormData) -> dict[str, Any]:
        people = await run_in_threadpool(request.app.state.service.people)
        return {"faces": [p["name"] for p in people]}

    return await _answer(request, work)
