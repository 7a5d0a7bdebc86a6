"""What the server needs of a gallery beyond the public :class:`~facegnet.gallery.Gallery` API.

- names checked before anything is written (the gallery's own rule, plus no '/', which cannot travel in a URL);
- renaming and merging people: one SQLite transaction each through the gallery's store (template ids and
  embeddings stay as they are, so the FAISS index needs no change: names are looked up at search time).
  These belong in Gallery itself; they live here until it has them;
- :class:`PhotoStore`: uploaded photos kept in ``<gallery>/photos/<sha256>.<ext>`` (owner-only), so that
  templates enrolled through the server have a source photo (thumbnails, ``facegnet gallery rebuild``).
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from facegnet.errors import GalleryError
from facegnet.gallery import UNKNOWN
from facegnet.server.errors import ApiError
from facegnet.server.uploads import Upload

PHOTOS_DIR = "photos"


def clean_name(name: str) -> str:
    """A person's name with its whitespace collapsed; ApiError 422 for one the gallery cannot hold."""
    cleaned = " ".join(str(name).split())
    if not cleaned:
        raise ApiError(422, "a person's name cannot be empty")
    if cleaned == UNKNOWN:
        raise ApiError(422, f"{UNKNOWN!r} is reserved for faces that match no one")
    if "/" in cleaned:
        raise ApiError(422, f"a person's name cannot contain '/' ({cleaned!r})")
    if len(cleaned) > 200:
        raise ApiError(422, "a person's name cannot be longer than 200 characters")
    return cleaned


def _person_id(conn, name: str) -> int | None:
    row = conn.execute("SELECT id FROM people WHERE name=?", (name,)).fetchone()
    return None if row is None else int(row[0])


def rename_person(gallery, name: str, new_name: str) -> None:
    """Give a person another name (GalleryError when the new name is taken: merge instead)."""
    with gallery.store.write() as conn:
        person = _person_id(conn, name)
        if person is None:
            raise ApiError(404, f"no person named {name!r} in the gallery")
        if new_name != name and _person_id(conn, new_name) is not None:
            raise GalleryError(f"{new_name!r} is already in the gallery: merge {name!r} into {new_name!r} instead")
        conn.execute("UPDATE people SET name=? WHERE id=?", (new_name, person))


def merge_people(gallery, name: str, into: str) -> int:
    """Move every template of ``name`` to ``into`` and remove ``name``; returns the templates moved."""
    if name == into:
        raise ApiError(422, "cannot merge a person into themselves")
    with gallery.store.write() as conn:
        source, target = _person_id(conn, name), _person_id(conn, into)
        for who, pid in ((name, source), (into, target)):
            if pid is None:
                raise ApiError(404, f"no person named {who!r} in the gallery")
        moved = conn.execute("UPDATE templates SET person_id=? WHERE person_id=?", (target, source)).rowcount
        conn.execute("DELETE FROM people WHERE id=?", (source,))
    return int(moved)


class PhotoStore:
    """Uploaded photos, one file per distinct content, named by its sha256."""

    def __init__(self, gallery_dir: str | Path) -> None:
        self.root = Path(gallery_dir) / PHOTOS_DIR

    def put(self, upload: Upload) -> tuple[Path, bool]:
        """Store the upload (atomically, 0600); returns its path and whether this call created it."""
        path = self.root / f"{upload.sha256}{upload.suffix}"
        if path.is_file():
            return path, False
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".upload-")  # mkstemp files are 0600
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(upload.data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path, True

    def owns(self, source: str | None) -> bool:
        """Is this template source a photo of this store (as opposed to a user's own file elsewhere)?"""
        if not source:
            return False
        try:
            return Path(source).resolve().parent == self.root.resolve()
        except OSError:
            return False

    def discard(self, source: str | None) -> None:
        """Delete a stored photo (never a user's file outside the store)."""
        if self.owns(source):
            Path(source).unlink(missing_ok=True)  # type: ignore[arg-type]
