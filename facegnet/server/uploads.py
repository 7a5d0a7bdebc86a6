"""Uploaded photos: bounded in size, decoded by facegnet's own reader (:func:`facegnet.io.load_image`).

The bytes go to a private temporary file only to be decoded, so an upload meets exactly the rules a file on
disk meets (empty, not an image, truncated, too many pixels) and its errors name the upload, not the file.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from fastapi import HTTPException, UploadFile
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from facegnet.errors import FacegnetError
from facegnet.io import IMAGE_SUFFIXES, load_image
from facegnet.server.errors import ApiError, error_response

MB = 1024 * 1024


@dataclass
class Upload:
    """One uploaded file: the name the client gave it and its bytes."""

    name: str
    data: bytes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def suffix(self) -> str:
        suffix = Path(self.name).suffix.lower()
        return suffix if suffix in IMAGE_SUFFIXES else ".img"


async def read_upload(file: UploadFile, limit: int, field: str = "file") -> Upload:
    """The bytes of one upload; ApiError 413 past ``limit`` bytes."""
    name = os.path.basename(file.filename or "") or field
    data = await file.read(limit + 1)
    if len(data) > limit:
        raise ApiError(413, f"{name}: upload too large (more than {limit / MB:g} MB)")
    return Upload(name, data)


async def read_uploads(files: list[UploadFile], limit: int, field: str = "file",
                       max_files: int = 100) -> list[Upload]:
    if not files:
        raise ApiError(422, f"missing field {field!r}: send one or more files")
    if len(files) > max_files:
        raise ApiError(413, f"too many files in one request ({len(files)}; at most {max_files})")
    return [await read_upload(f, limit, field) for f in files]


def relabel(exc: FacegnetError, name: str) -> FacegnetError:
    """The same error, naming the upload instead of a temporary file or an in-memory array."""
    return type(exc)(exc.reason, name)


def decode(upload: Upload, scratch: Path | None = None) -> np.ndarray:
    """The upload as an RGB uint8 array; facegnet's ImageError (naming the upload) when it is not one."""
    fd, path = tempfile.mkstemp(suffix=upload.suffix, dir=scratch)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(upload.data)
        return load_image(path)
    except FacegnetError as exc:
        raise relabel(exc, upload.name) from None
    finally:
        os.unlink(path)


class BodyLimit:
    """ASGI middleware: refuse a request body over ``limit`` bytes with 413 before it is all read."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = int(limit)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        message = f"request too large (more than {self.limit / MB:g} MB)"
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            await error_response(413, message)(scope, receive, send)
            return
        received = 0
        started = False

        async def counted_receive() -> Message:
            nonlocal received
            msg = await receive()
            if msg["type"] == "http.request":
                received += len(msg.get("body", b""))
                if received > self.limit:  # FastAPI passes an HTTPException from here on to its handler
                    raise HTTPException(413, message)
            return msg

        async def watched_send(msg: Message) -> None:
            nonlocal started
            started = started or msg["type"] == "http.response.start"
            await send(msg)

        try:
            await self.app(scope, counted_receive, watched_send)
        except HTTPException as exc:
            if started or exc.status_code != 413:
                raise
            await error_response(413, message)(scope, receive, send)
