"""What the server adds to a gallery: names checked for URLs, and a store for uploaded photos.

- :func:`clean_name`: the gallery's own name rule (:func:`facegnet.gallery.folders.clean_name`) plus no '/',
  which cannot travel in a URL path, and no control characters (a NUL or an escape is no one's name and
  draws as a box), as a 422 before anything is written;
- :class:`PhotoStore`: uploaded photos kept in ``<gallery>/photos/<sha256>.<ext>`` (owner-only), so that
  templates enrolled through the server have a source photo (thumbnails, ``facegnet gallery rebuild``).
"""
from __future__ import annotations

import unicodedata
from pathlib import Path

from facegnet.atomic import write_bytes
from facegnet.errors import GalleryError
from facegnet.gallery.folders import clean_name as gallery_clean_name
from facegnet.server.errors import ApiError
from facegnet.server.uploads import Upload

PHOTOS_DIR = "photos"


def clean_name(name: str) -> str:
    """A person's name as the gallery stores it; ApiError 422 for one it cannot hold or a URL cannot carry."""
    try:
        cleaned = gallery_clean_name(name)
    except GalleryError as exc:
        raise ApiError(422, exc.reason) from None
    if "/" in cleaned:
        raise ApiError(422, slash_message(cleaned))
    control = next((c for c in cleaned if unicodedata.category(c) == "Cc"), None)
    if control is not None:
        raise ApiError(422, f"a person's name cannot contain control characters ({cleaned!r} holds "
                            f"U+{ord(control):04X})")
    if len(cleaned) > 200:
        raise ApiError(422, "a person's name cannot be longer than 200 characters")
    return cleaned


def slash_message(name: str) -> str:
    """The one answer to a name with '/' (a new name in a body, or one in a URL path)."""
    return f"a person's name cannot contain '/' ({name!r})"


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
        write_bytes(path, upload.data, 0o600)
        return path, True

    def owns(self, source: str | None) -> bool:
        """Is this template source a photo of this store (as opposed to a user's own file elsewhere)?"""
        if not source:
            return False
        try:
            return Path(source).resolve().parent == self.root.resolve()
        except OSError:
            return False

    def fetch(self, sha256: str | None) -> str | None:
        """A stored photo kept elsewhere (a database), copied here; a directory store has nothing elsewhere."""
        return None

    def discard(self, source: str | None) -> None:
        """Delete a stored photo (never a user's file outside the store)."""
        if self.owns(source):
            Path(source).unlink(missing_ok=True)  # type: ignore[arg-type]
