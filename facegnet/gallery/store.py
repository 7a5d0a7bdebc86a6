"""The SQLite side of a gallery: people, templates and the model fingerprint. The source of truth.

One database file holds everything that matters; the FAISS index is a cache rebuilt from it. Every change
runs in one ``BEGIN IMMEDIATE`` transaction that also bumps ``meta.generation``, so a kill at any moment
leaves the database before or after a whole change, and readers can tell cheaply whether their cached
index is still current. WAL journalling lets readers (``identify``) run while a writer enrolls.
"""
from __future__ import annotations

import os
import sqlite3
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facegnet.errors import GalleryError

SCHEMA_VERSION = 1

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


@dataclass
class TemplateRecord:
    """One enrolled face: where it came from and its embedding."""

    id: int
    name: str
    source: str | None
    sha256: str | None
    box: tuple[float, float, float, float] | None
    score: float | None
    quality: float | None
    landmarks: np.ndarray | None
    created: float
    embedding: np.ndarray


@dataclass
class PersonRecord:
    """A person and how many templates they have."""

    name: str
    templates: int
    created: float


def create_private(path: Path) -> None:
    """Create an empty file readable by its owner only (if it does not exist yet)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.close(fd)


class Store:
    """The gallery database. Open with :meth:`open`; use :meth:`write` for every change."""

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

    # ------------------------------------------------------------------------------------- meta
    def meta(self) -> dict[str, str]:
        return dict(self.conn.execute("SELECT key, value FROM meta"))

    def get_meta(self, key: str, default: str | None = None) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return default if row is None else row[0]

    def set_meta(self, key: str, value: object) -> None:
        """Set a meta value; call inside :meth:`write`."""
        self.conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, str(value)))

    def initialise(self, fingerprint: str, model: str, dim: int, index_kind: str, procedure: str) -> bool:
        """Record the model, embedding procedure and layout of a new gallery; returns False if it was already
        initialised."""
        with self.write():
            if self.get_meta("fingerprint") is not None:
                return False
            for key, value in {
                "schema_version": SCHEMA_VERSION,
                "fingerprint": fingerprint,
                "procedure": procedure,
                "model": model,
                "embedding_size": dim,
                "index_kind": index_kind,
                "created": time.time(),
                "epoch": uuid.uuid4().hex,
            }.items():
                self.set_meta(key, value)
        return True

    def generation(self) -> int:
        """Counter bumped by every committed change."""
        return int(self.get_meta("generation", "0") or 0)

    def epoch(self) -> str:
        """Token that changes when embeddings are replaced wholesale (rebuild)."""
        return self.get_meta("epoch", "") or ""

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

    # ------------------------------------------------------------------------------------- people
    def person_id(self, name: str, create: bool = False) -> int | None:
        row = self.conn.execute("SELECT id FROM people WHERE name=?", (name,)).fetchone()
        if row is not None:
            return int(row[0])
        if not create:
            return None
        cur = self.conn.execute("INSERT INTO people(name, created) VALUES (?, ?)", (name, time.time()))
        return int(cur.lastrowid)

    def people(self) -> list[PersonRecord]:
        rows = self.conn.execute(
            "SELECT p.name, COUNT(t.id), p.created FROM people p LEFT JOIN templates t ON t.person_id = p.id "
            "GROUP BY p.id ORDER BY p.name"
        )
        return [PersonRecord(name, int(n), float(created)) for name, n, created in rows]

    def count(self) -> tuple[int, int]:
        """(people, templates)."""
        people = self.conn.execute("SELECT COUNT(*) FROM people").fetchone()[0]
        templates = self.conn.execute("SELECT COUNT(*) FROM templates").fetchone()[0]
        return int(people), int(templates)

    # ------------------------------------------------------------------------------------- templates
    def add_template(
        self,
        name: str,
        embedding: np.ndarray,
        *,
        source: str | None = None,
        sha256: str | None = None,
        box: Sequence[float] | None = None,
        score: float | None = None,
        quality: float | None = None,
        landmarks: np.ndarray | None = None,
    ) -> int:
        """Insert one template (creating its person); call inside :meth:`write`. Returns its id."""
        person = self.person_id(name, create=True)
        box = [None] * 4 if box is None else [float(v) for v in box]
        lm = None if landmarks is None else np.asarray(landmarks, np.float32).reshape(5, 2).tobytes()
        cur = self.conn.execute(
            "INSERT INTO templates(person_id, source, sha256, x1, y1, x2, y2, score, quality, landmarks, "
            "created, embedding) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                person, source, sha256, *box,
                None if score is None else float(score),
                None if quality is None else float(quality),
                lm, time.time(), _blob(embedding),
            ),
        )
        return int(cur.lastrowid)

    def find_sha256(self, sha256: str) -> tuple[int, str] | None:
        """(template id, person name) of the photo with this hash, if enrolled."""
        row = self.conn.execute(
            "SELECT t.id, p.name FROM templates t JOIN people p ON p.id = t.person_id WHERE t.sha256=?",
            (sha256,),
        ).fetchone()
        return None if row is None else (int(row[0]), row[1])

    def template_ids(self, name: str | None = None) -> np.ndarray:
        if name is None:
            rows = self.conn.execute("SELECT id FROM templates ORDER BY id")
        else:
            rows = self.conn.execute(
                "SELECT t.id FROM templates t JOIN people p ON p.id = t.person_id WHERE p.name=? ORDER BY t.id",
                (name,),
            )
        return np.array([r[0] for r in rows], dtype=np.int64)

    def embeddings(self, ids: Sequence[int] | np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(ids, float32 matrix) of the given templates, or of all of them, in id order."""
        dim = int(self.get_meta("embedding_size", "512") or 512)
        if ids is None:
            rows = self.conn.execute("SELECT id, embedding FROM templates ORDER BY id").fetchall()
        else:
            rows = []
            wanted = [int(i) for i in np.asarray(ids, np.int64).reshape(-1)]
            for start in range(0, len(wanted), 900):  # SQLite caps bound parameters
                chunk = wanted[start : start + 900]
                marks = ",".join("?" * len(chunk))
                rows += self.conn.execute(
                    f"SELECT id, embedding FROM templates WHERE id IN ({marks})", chunk
                ).fetchall()
            rows.sort()
        out_ids = np.array([r[0] for r in rows], dtype=np.int64)
        if not rows:
            return out_ids, np.zeros((0, dim), np.float32)
        matrix = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), dim)
        return out_ids, matrix.copy()

    def names_of(self, ids: Sequence[int] | np.ndarray) -> dict[int, str]:
        """Person name of each template id (unknown ids are left out)."""
        wanted = sorted({int(i) for i in np.asarray(ids, np.int64).reshape(-1) if i >= 0})
        out: dict[int, str] = {}
        for start in range(0, len(wanted), 900):
            chunk = wanted[start : start + 900]
            marks = ",".join("?" * len(chunk))
            out.update(
                self.conn.execute(
                    f"SELECT t.id, p.name FROM templates t JOIN people p ON p.id = t.person_id "
                    f"WHERE t.id IN ({marks})",
                    chunk,
                ).fetchall()
            )
        return out

    def templates(self, name: str | None = None, with_embeddings: bool = False) -> list[TemplateRecord]:
        """Every template (of one person), oldest first."""
        query = (
            "SELECT t.id, p.name, t.source, t.sha256, t.x1, t.y1, t.x2, t.y2, t.score, t.quality, t.landmarks, "
            "t.created, {emb} FROM templates t JOIN people p ON p.id = t.person_id {where} ORDER BY t.id"
        ).format(emb="t.embedding" if with_embeddings else "NULL", where="WHERE p.name=?" if name else "")
        rows = self.conn.execute(query, (name,) if name else ())
        out = []
        for tid, pname, source, sha, x1, y1, x2, y2, score, quality, lm, created, emb in rows:
            out.append(
                TemplateRecord(
                    id=int(tid),
                    name=pname,
                    source=source,
                    sha256=sha,
                    box=None if x1 is None else (x1, y1, x2, y2),
                    score=score,
                    quality=quality,
                    landmarks=None if lm is None else np.frombuffer(lm, np.float32).reshape(5, 2).copy(),
                    created=float(created),
                    embedding=np.zeros(0, np.float32) if emb is None else np.frombuffer(emb, np.float32).copy(),
                )
            )
        return out

    def set_embedding(self, template_id: int, embedding: np.ndarray) -> None:
        """Replace one template's embedding; call inside :meth:`write`."""
        self.conn.execute("UPDATE templates SET embedding=? WHERE id=?", (_blob(embedding), int(template_id)))

    def remove_person(self, name: str) -> np.ndarray:
        """Delete a person and their templates; call inside :meth:`write`. Returns the template ids."""
        ids = self.template_ids(name)
        self.conn.execute("DELETE FROM people WHERE name=?", (name,))  # templates go by ON DELETE CASCADE
        return ids

    def remove_template(self, template_id: int) -> str | None:
        """Delete one template (and its person if it was their last); call inside :meth:`write`.

        Returns the person's name, or None if there is no such template.
        """
        row = self.conn.execute(
            "SELECT p.id, p.name FROM templates t JOIN people p ON p.id = t.person_id WHERE t.id=?",
            (int(template_id),),
        ).fetchone()
        if row is None:
            return None
        self.conn.execute("DELETE FROM templates WHERE id=?", (int(template_id),))
        left = self.conn.execute("SELECT COUNT(*) FROM templates WHERE person_id=?", (row[0],)).fetchone()[0]
        if left == 0:
            self.conn.execute("DELETE FROM people WHERE id=?", (row[0],))
        return row[1]

    def rename_person(self, name: str, new_name: str) -> bool:
        """Give a person another name; call inside :meth:`write`. False if there is no such person.

        Template ids and embeddings stay: the index needs no change (names are looked up at search time).
        Raises GalleryError when ``new_name`` is taken by someone else.
        """
        person = self.person_id(name)
        if person is None:
            return False
        if new_name != name and self.person_id(new_name) is not None:
            raise GalleryError(f"{new_name!r} is already in the gallery: merge {name!r} into {new_name!r} instead",
                               self.path)
        self.conn.execute("UPDATE people SET name=? WHERE id=?", (new_name, person))
        return True

    def merge_people(self, name: str, into: str) -> int:
        """Move every template of ``name`` to ``into`` (who must exist) and delete ``name``; call inside
        :meth:`write`. Returns the templates moved."""
        source, target = self.person_id(name), self.person_id(into)
        moved = self.conn.execute("UPDATE templates SET person_id=? WHERE person_id=?", (target, source)).rowcount
        self.conn.execute("DELETE FROM people WHERE id=?", (source,))
        return int(moved)

    def integrity_ok(self) -> bool:
        return self.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"

    # ------------------------------------------------------------------------------------- for the index cache
    def max_template_id(self) -> int:
        return int(self.conn.execute("SELECT COALESCE(MAX(id), 0) FROM templates").fetchone()[0])

    def template_ids_after(self, template_id: int) -> np.ndarray:
        rows = self.conn.execute("SELECT id FROM templates WHERE id > ? ORDER BY id", (int(template_id),))
        return np.array([r[0] for r in rows], dtype=np.int64)

    def people_without_templates(self) -> int:
        return int(self.conn.execute(
            "SELECT COUNT(*) FROM people p WHERE NOT EXISTS (SELECT 1 FROM templates t WHERE t.person_id = p.id)"
        ).fetchone()[0])

    # ------------------------------------------------------------------------------------- migration
    def insert_template(self, record: TemplateRecord) -> None:
        """Insert a template under its own id (``facegnet gallery migrate``); call inside :meth:`write`."""
        person = self.person_id(record.name, create=True)
        box = [None] * 4 if record.box is None else [float(v) for v in record.box]
        lm = None if record.landmarks is None else np.asarray(record.landmarks, np.float32).tobytes()
        self.conn.execute(
            "INSERT INTO templates(id, person_id, source, sha256, x1, y1, x2, y2, score, quality, landmarks, "
            "created, embedding) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (record.id, person, record.source, record.sha256, *box, record.score, record.quality, lm,
             record.created, _blob(record.embedding)),
        )

    def after_import(self) -> None:
        """Nothing to do: AUTOINCREMENT continues past the largest id inserted."""


def _blob(embedding: np.ndarray) -> bytes:
    return np.ascontiguousarray(np.asarray(embedding, np.float32).reshape(-1)).tobytes()
