"""The gallery's tables, whichever database holds them: the records read from them and every store method whose
logic does not depend on the SQL dialect.

:class:`~facegnet.gallery.store.Store` (SQLite) and :class:`~facegnet.gallery.pg_store.PgStore` (PostgreSQL)
both derive from :class:`SqlTables` and add what differs: opening, transactions, the driver's parameter mark,
the id of a new row, selecting many ids at once and the integrity check.
"""
from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import numpy as np

from facegnet.errors import GalleryError

SCHEMA_VERSION = 1


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


class SqlTables:
    """People, templates and meta values over a DB-API connection ``conn``; ``path`` is what messages name.

    Statements here are written with ``?`` marks; a subclass whose driver uses another mark sets :attr:`MARK`.
    Methods that change anything are called inside the subclass's ``write()``.
    """

    #: The driver's parameter mark ("?" for sqlite3, "%s" for psycopg).
    MARK = "?"
    #: A NULL of the embedding column's type, for listings without embeddings.
    NULL_BLOB = "NULL"

    conn: Any
    path: Any
    #: (generation, (people, templates)) of the last count outside a transaction.
    _counted: tuple[int, tuple[int, int]] | None = None
    write: Callable[[], AbstractContextManager[Any]]  # one atomic change, in the database's own way
    close: Callable[[], None]

    # ------------------------------------------------------------------------------------- dialect
    def _execute(self, sql: str, params: Sequence[Any] | None = None) -> Any:
        """Run ``sql`` (written with ``?`` marks) on the connection; returns its cursor."""
        if self.MARK != "?":
            sql = sql.replace("?", self.MARK)
        return self.conn.execute(sql) if params is None else self.conn.execute(sql, params)

    def _insert(self, sql: str, params: Sequence[Any]) -> int:
        """Run an INSERT of one row into a table with an ``id`` key; returns the new row's id."""
        raise NotImplementedError

    def _select_in(self, query: str, column: str, ids: list[int]) -> list[Any]:
        """The rows of ``query`` (a SELECT with ``{}`` for its condition) where ``column`` is one of ``ids``."""
        raise NotImplementedError

    # ------------------------------------------------------------------------------------- meta
    def meta(self) -> dict[str, str]:
        return dict(self._execute("SELECT key, value FROM meta").fetchall())

    def get_meta(self, key: str, default: str | None = None) -> str | None:
        row = self._execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return default if row is None else row[0]

    def set_meta(self, key: str, value: object) -> None:
        """Set a meta value; call inside ``write()``."""
        self._execute("INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE "
                      "SET value = EXCLUDED.value", (key, str(value)))

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

    def count(self) -> tuple[int, int]:
        """(people, templates), remembered until the generation changes: every search asks for them (its threshold
        depends on them), and counting scans the tables."""
        cached = self._counted
        if self._in_transaction():  # a count inside a transaction may include its own uncommitted changes
            return self._count_rows()
        generation = self.generation()  # read first: a change committed meanwhile makes the next call recount
        if cached is not None and cached[0] == generation:
            return cached[1]
        counts = self._count_rows()
        self._counted = (generation, counts)
        return counts

    def _count_rows(self) -> tuple[int, int]:
        row = self._execute("SELECT (SELECT COUNT(*) FROM people), (SELECT COUNT(*) FROM templates)").fetchone()
        return int(row[0]), int(row[1])

    def _in_transaction(self) -> bool:
        """Whether this connection is inside an open write or read transaction."""
        raise NotImplementedError

    def epoch(self) -> str:
        """Token that changes when embeddings are replaced wholesale (rebuild)."""
        return self.get_meta("epoch", "") or ""

    # ------------------------------------------------------------------------------------- people
    def person_id(self, name: str, create: bool = False) -> int | None:
        row = self._execute("SELECT id FROM people WHERE name=?", (name,)).fetchone()
        if row is not None:
            return int(row[0])
        if not create:
            return None
        return self._insert("INSERT INTO people(name, created) VALUES (?, ?)", (name, time.time()))

    def people(self) -> list[PersonRecord]:
        rows = self._execute(
            "SELECT p.name, COUNT(t.id), p.created FROM people p LEFT JOIN templates t ON t.person_id = p.id "
            "GROUP BY p.id ORDER BY p.name"
        ).fetchall()
        return [PersonRecord(name, int(n), float(created)) for name, n, created in rows]

    def people_without_templates(self) -> int:
        return int(self._execute(
            "SELECT COUNT(*) FROM people p WHERE NOT EXISTS (SELECT 1 FROM templates t WHERE t.person_id = p.id)"
        ).fetchone()[0])

    def rename_person(self, name: str, new_name: str) -> bool:
        """Give a person another name; call inside ``write()``. False if there is no such person.

        Template ids and embeddings stay: the index needs no change (names are looked up at search time).
        Raises GalleryError when ``new_name`` is taken by someone else.
        """
        person = self.person_id(name)
        if person is None:
            return False
        if new_name != name and self.person_id(new_name) is not None:
            raise GalleryError(f"{new_name!r} is already in the gallery: merge {name!r} into {new_name!r} instead",
                               self.path)
        self._execute("UPDATE people SET name=? WHERE id=?", (new_name, person))
        return True

    def merge_people(self, name: str, into: str) -> int:
        """Move every template of ``name`` to ``into`` (who must exist) and delete ``name``; call inside
        ``write()``. Returns the templates moved."""
        source, target = self.person_id(name), self.person_id(into)
        moved = self._execute("UPDATE templates SET person_id=? WHERE person_id=?", (target, source)).rowcount
        self._execute("DELETE FROM people WHERE id=?", (source,))
        return int(moved)

    def remove_person(self, name: str) -> np.ndarray:
        """Delete a person and their templates; call inside ``write()``. Returns the template ids."""
        ids = self.template_ids(name)
        self._execute("DELETE FROM people WHERE name=?", (name,))  # templates go by ON DELETE CASCADE
        return ids

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
        """Insert one template (creating its person); call inside ``write()``. Returns its id."""
        person = self.person_id(name, create=True)
        box = [None] * 4 if box is None else [float(v) for v in box]
        lm = None if landmarks is None else np.asarray(landmarks, np.float32).reshape(5, 2).tobytes()
        return self._insert(
            "INSERT INTO templates(person_id, source, sha256, x1, y1, x2, y2, score, quality, landmarks, "
            "created, embedding) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                person, source, sha256, *box,
                None if score is None else float(score),
                None if quality is None else float(quality),
                lm, time.time(), _blob(embedding),
            ),
        )

    def add_templates(self, names: Sequence[str], embeddings: np.ndarray, sources: Sequence[str | None],
                      sha256s: Sequence[str | None]) -> list[int]:
        """Insert many templates of precomputed embeddings (creating their people); call inside ``write()``.
        Returns their ids, in order. A store that can send them in one go overrides this."""
        return [self.add_template(n, v, source=s, sha256=h) for n, v, s, h in zip(names, embeddings, sources, sha256s)]

    def insert_template(self, record: TemplateRecord) -> None:
        """Insert a template under its own id (``facegnet gallery migrate``); call inside ``write()``."""
        person = self.person_id(record.name, create=True)
        box = [None] * 4 if record.box is None else [float(v) for v in record.box]
        lm = None if record.landmarks is None else np.asarray(record.landmarks, np.float32).tobytes()
        self._execute(
            "INSERT INTO templates(id, person_id, source, sha256, x1, y1, x2, y2, score, quality, landmarks, "
            "created, embedding) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (record.id, person, record.source, record.sha256, *box, record.score, record.quality, lm,
             record.created, _blob(record.embedding)),
        )

    def find_sha256(self, sha256: str) -> tuple[int, str] | None:
        """(template id, person name) of the photo with this hash, if enrolled."""
        row = self._execute(
            "SELECT t.id, p.name FROM templates t JOIN people p ON p.id = t.person_id WHERE t.sha256=?",
            (sha256,),
        ).fetchone()
        return None if row is None else (int(row[0]), row[1])

    def template_ids(self, name: str | None = None) -> np.ndarray:
        if name is None:
            rows = self._execute("SELECT id FROM templates ORDER BY id").fetchall()
        else:
            rows = self._execute(
                "SELECT t.id FROM templates t JOIN people p ON p.id = t.person_id WHERE p.name=? ORDER BY t.id",
                (name,),
            ).fetchall()
        return np.array([r[0] for r in rows], dtype=np.int64)

    def embeddings(self, ids: Sequence[int] | np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(ids, float32 matrix) of the given templates, or of all of them, in id order."""
        dim = int(self.get_meta("embedding_size", "512") or 512)
        if ids is None:
            rows = self._execute("SELECT id, embedding FROM templates ORDER BY id").fetchall()
        else:
            wanted = [int(i) for i in np.asarray(ids, np.int64).reshape(-1)]
            rows = self._select_in("SELECT id, embedding FROM templates WHERE {}", "id", wanted)
            rows.sort()
        out_ids = np.array([r[0] for r in rows], dtype=np.int64)
        if not rows:
            return out_ids, np.zeros((0, dim), np.float32)
        matrix = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), dim)
        return out_ids, matrix.copy()

    def names_of(self, ids: Sequence[int] | np.ndarray) -> dict[int, str]:
        """Person name of each template id (unknown ids are left out)."""
        wanted = sorted({int(i) for i in np.asarray(ids, np.int64).reshape(-1) if i >= 0})
        rows = self._select_in("SELECT t.id, p.name FROM templates t JOIN people p ON p.id = t.person_id "
                               "WHERE {}", "t.id", wanted)
        return {int(tid): name for tid, name in rows}

    def templates(self, name: str | None = None, with_embeddings: bool = False) -> list[TemplateRecord]:
        """Every template (of one person), oldest first."""
        query = (
            "SELECT t.id, p.name, t.source, t.sha256, t.x1, t.y1, t.x2, t.y2, t.score, t.quality, t.landmarks, "
            "t.created, {emb} FROM templates t JOIN people p ON p.id = t.person_id {where} ORDER BY t.id"
        ).format(emb="t.embedding" if with_embeddings else self.NULL_BLOB, where="WHERE p.name=?" if name else "")
        rows = self._execute(query, (name,) if name else ()).fetchall()
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
        """Replace one template's embedding; call inside ``write()``."""
        self._execute("UPDATE templates SET embedding=? WHERE id=?", (_blob(embedding), int(template_id)))

    def remove_template(self, template_id: int) -> str | None:
        """Delete one template (and its person if it was their last); call inside ``write()``.

        Returns the person's name, or None if there is no such template.
        """
        row = self._execute(
            "SELECT p.id, p.name FROM templates t JOIN people p ON p.id = t.person_id WHERE t.id=?",
            (int(template_id),),
        ).fetchone()
        if row is None:
            return None
        self._execute("DELETE FROM templates WHERE id=?", (int(template_id),))
        left = self._execute("SELECT COUNT(*) FROM templates WHERE person_id=?", (row[0],)).fetchone()[0]
        if left == 0:
            self._execute("DELETE FROM people WHERE id=?", (row[0],))
        return row[1]

    # ------------------------------------------------------------------------------------- for the index cache
    def max_template_id(self) -> int:
        return int(self._execute("SELECT COALESCE(MAX(id), 0) FROM templates").fetchone()[0])

    def template_ids_after(self, template_id: int) -> np.ndarray:
        rows = self._execute("SELECT id FROM templates WHERE id > ? ORDER BY id", (int(template_id),)).fetchall()
        return np.array([r[0] for r in rows], dtype=np.int64)


def _blob(embedding: np.ndarray) -> bytes:
    return np.ascontiguousarray(np.asarray(embedding, np.float32).reshape(-1)).tobytes()


__all__ = ["SCHEMA_VERSION", "PersonRecord", "SqlTables", "TemplateRecord"]
