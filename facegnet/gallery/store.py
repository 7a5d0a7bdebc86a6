"""The SQLite side of a gallery: people, templates and the model fingerprint. The source of truth.

One database file holds everything that matters; the FAISS index is a cache rebuilt from it. Every change
runs in one ``BEGIN IMMEDIATE`` transaction that also bumps ``meta.generation``, so a kill at any moment
leaves the database before or after a whole change, and readers can tell cheaply whether their cached
index is still current. WAL journalling lets readers (``identify``) run while a writer enrolls.
"""
from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from facegnet.errors import GalleryError
from facegnet.gallery.tables import (
    SCHEMA_VERSION,
    PersonRecord,
    SqlTables,
    TemplateRecord,
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS people (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    name    TEXT NOT NULL UNIQUE,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS templates (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,   -- also the FAISS id; never reused
    person_id INTEGER NOT NULL REFERENCES people(id) ON DELETE CASCADE,
    source    TEXT,                                -- absolute path of the photo (NULL: given as pixels)
    sha256    TEXT UNIQUE,                         -- of the file's bytes: re-enrolling adds only new photos
    x1 REAL, y1 REAL, x2 REAL, y2 REAL,            -- face box in the photo, pixels
    score     REAL,                                -- detection score
    quality   REAL,                                -- see facegnet.gallery.enrolment_rules.face_quality
    landmarks BLOB,                                -- 5x2 float32, lets rebuild re-align without re-detecting
    created   REAL NOT NULL,
    embedding BLOB NOT NULL                        -- float32 unit vector
);
CREATE INDEX IF NOT EXISTS templates_person ON templates(person_id);
"""

def create_private(path: Path) -> None:
    """Create an empty file readable by its owner only (if it does not exist yet)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.close(fd)


class Store(SqlTables):
    """The gallery database. Open with :meth:`open`; use :meth:`write` for every change.

    The queries that read the same in PostgreSQL are in :class:`~facegnet.gallery.tables.SqlTables`; here
    are SQLite's own.
    """

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self.conn = conn
        self.path = path

    # ------------------------------------------------------------------------------------- opening
    @classmethod
    def open(cls, path: str | Path, create: bool = False) -> "Store":
        """Open (and with ``create`` initialise) the database at ``path``."""
        path = Path(path)
        if not path.exists():
            if not create:
                raise GalleryError("gallery database not found", path)
            create_private(path)  # SQLite gives its -wal/-shm files the database file's mode
        try:
            conn = sqlite3.connect(path, timeout=30.0, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            if create:
                conn.executescript(_SCHEMA)
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        except sqlite3.DatabaseError as exc:
            raise GalleryError(f"not a gallery database ({exc})", path) from None
        if not {"meta", "people", "templates"} <= tables:
            conn.close()
            raise GalleryError("not a gallery database (tables missing)", path)
        return cls(conn, path)

    def close(self) -> None:
        self.conn.close()

    # ------------------------------------------------------------------------------------- transactions
    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One atomic change: ``BEGIN IMMEDIATE`` … ``COMMIT`` (rolled back on any exception)."""
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise GalleryError(f"gallery database is busy ({exc})", self.path) from None
        try:
            yield self.conn
            self.conn.execute(
                "INSERT INTO meta(key, value) VALUES ('generation', '1') ON CONFLICT(key) "
                "DO UPDATE SET value = CAST(value AS INTEGER) + 1"
            )
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """A consistent snapshot across several SELECTs (WAL read transaction)."""
        self.conn.execute("BEGIN")
        try:
            yield self.conn
        finally:
            self.conn.execute("COMMIT")

    # ------------------------------------------------------------------------------------- dialect
    def _insert(self, sql: str, params: Sequence[Any]) -> int:
        return int(self._execute(sql, params).lastrowid)

    def _select_in(self, query: str, column: str, ids: list[int]) -> list[Any]:
        rows: list[Any] = []
        for start in range(0, len(ids), 900):  # SQLite caps bound parameters
            chunk = ids[start : start + 900]
            marks = ",".join("?" * len(chunk))
            rows += self.conn.execute(query.format(f"{column} IN ({marks})"), chunk).fetchall()
        return rows

    # ------------------------------------------------------------------------------------- SQLite's own
    def _in_transaction(self) -> bool:
        return self.conn.in_transaction

    def integrity_ok(self) -> bool:
        return self.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"

    def after_import(self) -> None:
        """Nothing to do: AUTOINCREMENT continues past the largest id inserted."""


__all__ = ["SCHEMA_VERSION", "PersonRecord", "Store", "TemplateRecord", "create_private"]
