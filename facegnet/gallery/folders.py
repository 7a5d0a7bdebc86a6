"""Where galleries live and how enrolment folders are read: the default location, people's names, photos.

A gallery holds biometric data, so by default it lives in the user's data directory, never in the working
directory or the source tree: ``$FACEGNET_GALLERY`` if set, else ``$XDG_DATA_HOME/facegnet/gallery``, else
``~/.local/share/facegnet/gallery``.
"""
from __future__ import annotations

import os
import re
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TypeVar

from facegnet.errors import DataError, GalleryError
from facegnet.gallery.results import UNKNOWN
from facegnet.gallery.store import Store
from facegnet.gallery.tables import SCHEMA_VERSION, SqlTables
from facegnet.io import IMAGE_SUFFIXES

#: Environment variable naming the gallery directory used when none is given.
GALLERY_ENV = "FACEGNET_GALLERY"
DB_NAME = "gallery.sqlite"
INDEX_NAME = "index.faiss"
LOCK_NAME = "gallery.lock"
# "Alice_2.jpg", "Alice-02.png", "Alice (3).jpg" in a flat folder are all Alice.
_NUMBER_SUFFIX = re.compile(r"(?:[ _\-]+\(?\d+\)?|\s*\(\d+\))$")
StoreT = TypeVar("StoreT", bound=SqlTables)


def default_gallery_dir() -> Path:
    """The gallery used when none is named: ``$FACEGNET_GALLERY``, else the per-user data directory
    (``$XDG_DATA_HOME/facegnet/gallery``, by default ``~/.local/share/facegnet/gallery``)."""
    named = os.environ.get(GALLERY_ENV, "").strip()
    if named:
        return Path(named).expanduser()
    data_home = os.environ.get("XDG_DATA_HOME", "").strip()
    # XDG: a relative XDG_DATA_HOME is invalid and must be ignored.
    if data_home and Path(data_home).is_absolute():
        base = Path(data_home)
    else:
        base = Path(os.path.expanduser("~")) / ".local" / "share"  # expanduser: no error without $HOME
    return base / "facegnet" / "gallery"


def open_store(directory: Path, *, create: bool, index: str | None,
               writer: Callable[[], AbstractContextManager], initial: Callable[[], tuple]) -> Store:
    """Open the database of the gallery in ``directory``; with ``create``, make the directory (owner-only:
    embeddings are biometric data) and record ``initial()`` (the arguments of :meth:`Store.initialise`) in a
    new one. ``writer()`` is the gallery's writer lock; ``index`` switches the recorded index kind."""
    db = directory / DB_NAME
    missing = f" (enroll people first: facegnet enroll FOLDER --gallery {directory})"
    if directory.exists() and not directory.is_dir():
        raise GalleryError("not a directory", directory)
    if not db.exists():
        if not create:
            raise GalleryError(f"no gallery here{missing}", directory)
        _make_private_dir(directory)
    return prepare_store(Store.open(db, create=create), create=create, index=index, writer=writer,
                         initial=initial, missing=f"no gallery here{missing}", where=directory)


def prepare_store(store: StoreT, *, create: bool, index: str | None, writer: Callable[[], AbstractContextManager],
                  initial: Callable[[], tuple], missing: str, where: str | Path) -> StoreT:
    """Finish opening a gallery database (SQLite or PostgreSQL): with ``create``, record ``initial()`` in a new
    one; switch the recorded index kind to ``index``; refuse one made by a newer facegnet. On a refusal the
    store is closed and GalleryError names ``where`` (``missing``: the reason when it holds no gallery)."""
    if store.get_meta("fingerprint") is None:  # new (or its creation was interrupted)
        if not create:
            store.close()
            raise GalleryError(missing, where)
        with writer():
            store.initialise(*initial())
    if index is not None and store.get_meta("index_kind") != index:
        with writer(), store.write():
            store.set_meta("index_kind", index)
    version = int(store.get_meta("schema_version", "0") or 0)
    if version > SCHEMA_VERSION:
        store.close()
        raise GalleryError(f"made by a newer facegnet (schema {version} > {SCHEMA_VERSION})", where)
    return store


def _make_private_dir(directory: Path) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        if directory.stat().st_uid == os.getuid():  # also an existing folder that becomes a gallery
            os.chmod(directory, 0o700)
    except OSError as exc:
        raise GalleryError(f"cannot create the gallery ({exc.strerror or exc})", directory) from None


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
           "open_store", "prepare_store", "discover", "clean_name"]
