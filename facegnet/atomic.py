"""Atomic file writes: one rule for every file facegnet replaces (indexes, exports, checkpoints, uploads, JSON).

A reader sees the old file or the new one, never half of one, and a crash leaves no stray temporary file:
the data goes to a temporary name in the same folder, is flushed to disk, given its final permissions and
renamed onto the target (``os.replace`` is atomic within one file system), then the folder entry is flushed.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


def fsync_dir(folder: str | os.PathLike) -> None:
    """Flush a folder's entries (a rename is durable only once its folder is); a no-op where unsupported."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, mode: int = 0o600) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; renamed onto ``path`` (with ``mode``) when the block ends
    without an exception, removed in every case otherwise. ``mode`` 0600 by default: most of what facegnet
    writes is biometric; shipped artefacts (exports) pass 0o644."""
    path = Path(path)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes(path: str | os.PathLike, data: bytes, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` atomically."""
    with atomic_path(path, mode) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike, text: str, mode: int = 0o600) -> None:
    """Replace ``path`` with ``text`` (UTF-8) atomically."""
    write_bytes(path, text.encode("utf-8"), mode)
