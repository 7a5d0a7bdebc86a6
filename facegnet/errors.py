"""One exception family for facegnet.

Every error a user can cause (a bad file, a photo without a face, a gallery made with other weights) is a
:class:`FacegnetError`. The CLI turns each into one line on stderr and a non-zero exit code; library users can
catch the base class or a specific subclass.
"""
from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path


class FacegnetError(Exception):
    """Base class of all errors facegnet raises on purpose."""

    exit_code = 1

    def __init__(self, reason: str, source: str | Path | None = None) -> None:
        self.reason = reason
        self.source = None if source is None else str(source)
        super().__init__(f"{self.source}: {reason}" if self.source else reason)


class ImageError(FacegnetError):
    """A file is missing, unreadable, or not an image."""

    exit_code = 2


class NoFaceError(FacegnetError):
    """An image holds no detectable face (or none large enough)."""

    exit_code = 3


class WeightsError(FacegnetError):
    """Model weights are missing, corrupt, or do not match their model card."""

    exit_code = 4


class GalleryError(FacegnetError):
    """A gallery is missing, locked, corrupt, or was made with other weights."""

    exit_code = 5


class DataError(FacegnetError):
    """A dataset, pairs file or CSV is missing or malformed."""

    exit_code = 6


class ExportError(FacegnetError):
    """An export cannot be written (bad output path, unsupported option) or does not match its source."""

    exit_code = 7


class DeviceError(FacegnetError):
    """The requested torch device does not exist on this machine."""

    exit_code = 8


class CaptureError(FacegnetError):
    """A camera, video file or stream cannot be opened, or a stream dropped and could not be reopened."""

    exit_code = 9


def one_line_errors(run: Callable[[], int]) -> int:
    """The body of a ``python -m facegnet.…`` tool: an error the user caused becomes one line on stderr and the
    error's exit code, as in the ``facegnet`` command."""
    try:
        return int(run() or 0)
    except FacegnetError as exc:
        print(f"facegnet: error: {exc}", file=sys.stderr)
        return exc.exit_code


def named_paths(items: list[str], flag: str, value: str = "FOLDER") -> dict[str, Path]:
    """Repeated ``--flag NAME=PATH`` options as ``{NAME: PATH}``; a malformed or missing one is a DataError."""
    named: dict[str, Path] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path or "/" in name:
            raise DataError(f"{flag} wants NAME={value}, not {item!r}")
        named[name] = Path(path)
    if not named:
        raise DataError(f"give at least one {flag} NAME={value}")
    return named
