"""Uploaded photos: bounded in size, decoded by facegnet's own reader (:func:`facegnet.io.load_image_reduced`).

The bytes are decoded in memory by the reader files on disk meet (empty, not an image, truncated, too many
pixels), its errors naming the upload. Big photos are decoded reduced to ``max_side`` pixels a side (a JPEG at
1/2, 1/4 or 1/8 by the codec itself): one 8000×8000 upload must not cost gigabytes or stall every other
request. Faces found on the reduced pixels are mapped back to the photo's own coordinates (:func:`in_photo`).
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from fastapi import HTTPException, UploadFile
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from facegnet.errors import FacegnetError
from facegnet.io import DEFAULT_MAX_SIDE, IMAGE_SUFFIXES, Decoded, load_image_reduced
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


def decode(upload: Upload, max_side: int | None = DEFAULT_MAX_SIDE) -> Decoded:
    """The upload as RGB pixels, at most ``max_side`` a side; facegnet's ImageError (naming the upload) when it
    is not a photo."""
    try:
        return load_image_reduced(upload.data, max_side, name=upload.name)
    except FacegnetError as exc:
        raise relabel(exc, upload.name) from None


def in_photo(face, decoded: Decoded):
    """A face found on the decoded (perhaps reduced) pixels, in the coordinates of the uploaded photo."""
    return face if face is None or not decoded.reduced else face.scaled(*decoded.scale)


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
