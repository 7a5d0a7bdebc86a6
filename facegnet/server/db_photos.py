"""Uploaded photos of a PostgreSQL gallery: kept in its ``photos`` table, so that every server of the gallery
can show a template's face (and none depends on another's disk). Each server also keeps a local copy in its
working directory, which enrolment reads; a photo another server stored is copied there when it is needed.
"""
from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from facegnet.atomic import write_bytes
from facegnet.gallery.pg_store import connect
from facegnet.server.people import PhotoStore
from facegnet.server.uploads import Upload

#: Photos no template refers to are removed after this long (a server killed between storing a photo and
#: enrolling it leaves one behind).
ORPHAN_SECONDS = 600.0


class DatabasePhotos(PhotoStore):
    """A :class:`PhotoStore` whose photos live in PostgreSQL, with local copies under ``work_dir``."""

    def __init__(self, work_dir: str | Path, url: str) -> None:
        super().__init__(work_dir)
        self.url = url
        self._lock = threading.Lock()
        self._conn = connect(url)
        self._execute("DELETE FROM photos p WHERE created < %s AND NOT EXISTS "
                      "(SELECT 1 FROM templates t WHERE t.sha256 = p.sha256)", (time.time() - ORPHAN_SECONDS,))

    def _execute(self, sql: str, params: tuple = ()) -> Any:
        with self._lock:
            return self._conn.execute(sql, params)

    def put(self, upload: Upload) -> tuple[Path, bool]:
        """Store the upload in the database (and a local copy); returns the copy and whether this call stored
        the photo."""
        row = self._execute("INSERT INTO photos(sha256, suffix, data, created) VALUES (%s, %s, %s, %s) "
                            "ON CONFLICT (sha256) DO NOTHING RETURNING sha256",
                            (upload.sha256, upload.suffix, upload.data, time.time())).fetchone()
        path, _ = super().put(upload)
        return path, row is not None

    def fetch(self, sha256: str | None) -> str | None:
        """A local copy of the stored photo with this hash (from the database when not here yet), or None."""
        if not sha256:
            return None
        row = self._execute("SELECT suffix, data FROM photos WHERE sha256 = %s", (sha256,)).fetchone()
        if row is None:
            return None
        path = self.root / f"{sha256}{row[0]}"
        if not path.is_file():
            self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
            write_bytes(path, bytes(row[1]), 0o600)
        return str(path)

    def discard(self, source: str | None) -> None:
        """Delete a stored photo here and, when no template refers to it any more, in the database."""
        if not self.owns(source):
            return
        sha256 = Path(str(source)).stem
        self._execute("DELETE FROM photos p WHERE sha256 = %s AND NOT EXISTS "
                      "(SELECT 1 FROM templates t WHERE t.sha256 = p.sha256)", (sha256,))
        super().discard(source)

    def close(self) -> None:
        with self._lock:
            self._conn.close()


__all__ = ["DatabasePhotos", "ORPHAN_SECONDS"]
