"""One error shape for the whole API: a 4xx/5xx status and ``{"error": "<one line>"}``.

facegnet's own exceptions (:mod:`facegnet.errors`) carry the reason; :func:`status_for` is the one place
that turns each kind into an HTTP status. No answer names a file of the server (:func:`hide_paths`): a
client learns the name it uploaded under, never where the gallery or a temporary file lives.
"""
from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from facegnet.errors import (
    DataError,
    FacegnetError,
    GalleryError,
    ImageError,
    NoFaceError,
)

log = logging.getLogger("facegnet.server")


class ApiError(Exception):
    """An error the server itself decides on (bad token, unknown person, upload too large)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = int(status)
        self.message = one_line(message)


def one_line(text: object) -> str:
    """Collapse whitespace so that every message is exactly one line."""
    return " ".join(str(text).split())


def status_for(exc: FacegnetError) -> int:
    """The HTTP status of one of facegnet's errors."""
    if isinstance(exc, ImageError):
        if exc.reason.startswith("image too large"):  # the decompression-bomb guard of facegnet.io
            return 413
        if exc.reason.startswith("not an image"):
            return 415
        return 400  # empty, truncated, unreadable
    if isinstance(exc, NoFaceError):
        return 422  # a readable photo, but no usable face: the request cannot be carried out
    if isinstance(exc, GalleryError):
        if exc.reason.startswith("busy") or "database is busy" in exc.reason:
            return 503  # another writer holds the gallery: try again
        return 409  # empty gallery, other weights, name rules: the gallery's state forbids it
    if isinstance(exc, DataError):
        return 400
    return 400


def hide_paths(message: str, roots: Iterable[str | Path]) -> str:
    """``message`` with every path under one of ``roots`` replaced by its last part (the root alone: "…")."""
    spelled = {os.path.abspath(str(r)) for r in roots} | {os.path.realpath(str(r)) for r in roots}
    for root in sorted((r for r in spelled if r not in ("/", "")), key=len, reverse=True):
        pattern = re.escape(root.rstrip("/")) + r"(?:/[^\s'\":,()]*)?"
        message = re.sub(pattern, lambda m, root=root: os.path.basename(m.group(0).rstrip("/"))
                         if m.group(0) != root else "…", message)
    return message


def client_message(exc: FacegnetError) -> str:
    """One of facegnet's errors as a client may read it: named by the upload, never by a server path."""
    if exc.source and (os.path.isabs(exc.source) or os.sep in exc.source):
        return exc.reason  # a file of the server (the gallery, a stored photo): the reason alone
    return str(exc)


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": one_line(message)}, status_code=status, headers=headers)


def _describe_validation(exc: RequestValidationError) -> str:
    """FastAPI's list of validation problems as one sentence (the first problem, named by its field)."""
    errors = exc.errors()
    if not errors:
        return "invalid request"
    first = errors[0]
    where = [str(part) for part in first.get("loc", ()) if part not in ("body", "query", "path", "header")]
    field = ".".join(where) or "request"
    if first.get("type") == "missing":
        return f"missing field {field!r}"
    return f"{field}: {first.get('msg', 'invalid value')}"


def install_error_handlers(app: FastAPI, private_paths: Iterable[str | Path] = ()) -> None:
    """Make every failure, expected or not, answer ``{"error": ...}``; no answer names ``private_paths``."""
    roots = list(private_paths)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return error_response(exc.status, hide_paths(exc.message, roots), headers)

    @app.exception_handler(FacegnetError)
    async def _facegnet_error(request: Request, exc: FacegnetError) -> JSONResponse:
        return error_response(status_for(exc), hide_paths(client_message(exc), roots))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else "request failed"
        if exc.status_code == 404 and message == "Not Found":
            message = f"no such endpoint: {request.method} {request.url.path}"
        return error_response(exc.status_code, message, getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(422, _describe_validation(exc))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return error_response(500, f"internal server error ({type(exc).__name__}); see the server's log")
