"""Where galleries live and how enrolment folders are read: the default location, people's names, photos.

A gallery holds biometric data, so by default it lives in the user's data directory, never in the working
directory or the source tree: ``$FACEGNET_GALLERY`` if set, else ``$XDG_DATA_HOME/facegnet/gallery``, else
``~/.local/share/facegnet/gallery``.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from facegnet.errors import DataError, GalleryError
from facegnet.gallery.results import UNKNOWN

#: Environment variable naming the gallery directory used when none is given.
GALLERY_ENV = "FACEGNET_GALLERY"
DB_NAME = "gallery.sqlite"
INDEX_NAME = "index.faiss"
LOCK_NAME = "gallery.lock"
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm", ".pgm"})
# "Alice_2.jpg", "Alice-02.png", "Alice (3).jpg" in a flat folder are all Alice.
_NUMBER_SUFFIX = re.compile(r"(?:[ _\-]+\(?\d+\)?|\s*\(\d+\))$")


def default_gallery_dir() -> Path:
    """The gallery used when none is named: ``$FACEGNET_GALLERY``, else the per-user data directory
    (``$XDG_DATA_HOME/facegnet/gallery``, by default ``~/.local/share/facegnet/gallery``)."""
    named = os.environ.get(GALLERY_ENV, "").strip()
    if named:
        return Path(named).expanduser()
    data_home = os.environ.get("XDG_DATA_HOME", "").strip()
    # XDG: a relative XDG_DATA_HOME is invalid and must be ignored.
    base = Path(data_home) if data_home and Path(data_home).is_absolute() else Path.home() / ".local" / "share"
    return base / "facegnet" / "gallery"


def discover(folder: str | Path) -> list[tuple[str, Path]]:
    """(person name, photo) for every image of an enrolment folder, sorted.

    ``FOLDER/Name/…/photo.jpg`` belongs to ``Name``; ``FOLDER/Name.jpg`` (flat) too. Hidden files and
    files without an image suffix are ignored. Raises DataError for a missing or empty folder.
    """
    folder = Path(folder)
    if not folder.exists():
        raise DataError("folder not found", folder)
    if not folder.is_dir():
        raise DataError("not a folder (enroll takes a folder of people's photos)", folder)
    items: list[tuple[str, Path]] = []
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            for photo in sorted(entry.rglob("*")):
                hidden = any(part.startswith(".") for part in photo.relative_to(entry).parts)
                if photo.is_file() and photo.suffix.lower() in IMAGE_SUFFIXES and not hidden:
                    items.append((entry.name, photo))
        elif entry.is_file() and entry.suffix.lower() in IMAGE_SUFFIXES:
            items.append((_NUMBER_SUFFIX.sub("", entry.stem) or entry.stem, entry))
    if not items:
        raise DataError("no photos found (expected FOLDER/Name/photo.jpg or FOLDER/Name.jpg)", folder)
    return items


def clean_name(name: str) -> str:
    """A person's name with runs of white space collapsed; empty names and the reserved ``unknown`` refused."""
    cleaned = " ".join(str(name).split())
    if not cleaned:
        raise GalleryError("a person's name cannot be empty")
    if cleaned == UNKNOWN:
        raise GalleryError(f"{UNKNOWN!r} is reserved for faces that match no one")
    return cleaned


__all__ = ["GALLERY_ENV", "DB_NAME", "INDEX_NAME", "LOCK_NAME", "IMAGE_SUFFIXES", "default_gallery_dir",
           "discover", "clean_name"]
