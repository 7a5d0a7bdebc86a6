"""The PostgreSQL side of a gallery: the same tables and methods as the SQLite :class:`~facegnet.gallery.store.Store`,
for galleries shared by servers on several hosts (``--database postgresql://…``, psycopg 3).

Everything another host needs lives in the database: people, templates, the embedding procedure, uploaded
photos (:mod:`facegnet.server.db_photos`) and named tokens (:mod:`facegnet.gallery.pg_tokens`). Every change runs
in one transaction that first takes a transaction-scoped advisory lock (one writer at a time, as SQLite's
``BEGIN IMMEDIATE``), bumps ``meta.generation`` and sends ``NOTIFY facegnet_gallery, '<generation>'``: a process
killed mid-change leaves the database before or after the whole change, and every other process learns of the
change within milliseconds (:class:`ChangeListener`) and brings its FAISS index, a cache, in step at once. A
search still compares the generation with its index's (one cheap query, as with SQLite), so even the first
search after a commit elsewhere, before the announcement arrives, sees the change.
"""
from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np

from facegnet.errors import GalleryError
from facegnet.gallery.store import SCHEMA_VERSION, PersonRecord, TemplateRecord, _blob
from facegnet.locking import LockTimeout

#: Environment variable naming the gallery database (``postgresql://…``) used when none is given.
DATABASE_ENV = "FACEGNET_DATABASE"
#: The channel every committed change is announced on (payload: the new generation).
CHANNEL = "facegnet_gallery"
# Advisory lock keys (any two distinct 64-bit numbers): one for each change, one for a long writer (rebuild).
_CHANGE_KEY = 0x66676E6574_01
_WRITER_KEY = 0x66676E6574_02

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS people (
    id      BIGSERIAL PRIMARY KEY,
    name    TEXT NOT NULL UNIQUE,
    created DOUBLE PRECISION NOT NULL
);
CREATE TABLE IF NOT EXISTS templates (
    id        BIGSERIAL PRIMARY KEY,
    person_id BIGINT NOT NULL REFERENCES people(id) ON DELETE CASCADE,
    source    TEXT,
    sha256    TEXT UNIQUE,
    x1 DOUBLE PRECISION, y1 DOUBLE PRECISION, x2 DOUBLE PRECISION, y2 DOUBLE PRECISION,
    score     DOUBLE PRECISION,
    quality   DOUBLE PRECISION,
    landmarks BYTEA,
    created   DOUBLE PRECISION NOT NULL,
    embedding BYTEA NOT NULL
);
CREATE INDEX IF NOT EXISTS templates_person ON templates(person_id);
CREATE TABLE IF NOT EXISTS photos (
    sha256  TEXT PRIMARY KEY,
    suffix  TEXT NOT NULL,
    data    BYTEA NOT NULL,
    created DOUBLE PRECISION NOT NULL
);
CREATE TABLE IF NOT EXISTS tokens (
    name    TEXT PRIMARY KEY,
    digest  TEXT NOT NULL UNIQUE,
    role    TEXT NOT NULL,
    created DOUBLE PRECISION NOT NULL,
    revoked DOUBLE PRECISION
);
"""


def is_database_url(text: str | None) -> bool:
    """Does ``text`` name a PostgreSQL database (``postgresql://…`` or ``postgres://…``)?"""
    return bool(text) and str(text).startswith(("postgresql://", "postgres://"))


def redact(url: str) -> str:
    """The URL without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def connect(url: str) -> Any:
    """An autocommit psycopg connection, or GalleryError naming the (redacted) URL and the reason."""
    try:
        import psycopg
    except ImportError:
        raise GalleryError("a PostgreSQL gallery needs its extra: pip install 'facegnet[postgres]'") from None
    try:
        return psycopg.connect(url, autocommit=True, connect_timeout=10)
    except psycopg.Error as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise GalleryError(f"cannot connect to the database ({reason})", redact(url)) from None


class PgStore:
    """The gallery database in PostgreSQL. Open with :meth:`open`; use :meth:`write` for every change.

    Not thread-safe on its own (one connection): the gallery uses it under its mutex.
    """

    def __init__(self, conn: Any, url: str) -> None:
        self.conn = conn
        self.url = url
        self.path = redact(url)  # what messages name
        self._depth = 0  # nesting of write()/read()
        self.listener: ChangeListener | None = None
        self._counted: tuple[int | None, tuple[int, int]] = (None, (0, 0))  # (generation, counts)

    # ------------------------------------------------------------------------------------- opening
    @classmethod
    def open(cls, url: str, create: bool = False) -> "PgStore":
        """Connect to the database at ``url`` (and with ``create`` make the gallery's tables)."""
        import psycopg

        conn = connect(url)
        store = cls(conn, url)
        try:
            if create:
                with conn.transaction():
                    conn.execute("SELECT pg_advisory_xact_lock(%s)", (_CHANGE_KEY,))  # one creator at a time
                    conn.execute(_SCHEMA)
            tables = {r[0] for r in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")}
        except psycopg.Error as exc:
            conn.close()
            raise GalleryError(f"not a usable gallery database ({' '.join(str(exc).split())})", store.path) from None
        if not {"meta", "people", "templates"} <= tables:
            conn.close()
            raise GalleryError("no gallery in this database (enroll people first: facegnet enroll FOLDER "
                               "--database URL)", store.path)
        return store

    def close(self) -> None:
        if self.listener is not None:
            self.listener.stop()
            self.listener = None
        self.conn.close()

    def listen(self, on_change: Callable[[int], None] | None = None) -> None:
        """Follow other processes' changes (LISTEN): ``on_change(generation)`` runs on the listener's thread after
        each change, so the index is brought in step before the next search needs it."""
        if self.listener is None:
            self.listener = ChangeListener(self.url, on_change)
            self.listener.start()

    # ------------------------------------------------------------------------------------- meta
    def meta(self) -> dict[str, str]:
        return dict(self.conn.execute("SELECT key, value FROM meta").fetchall())

    def get_meta(self, key: str, default: str | None = None) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key=%s", (key,)).fetchone()
        return default if row is None else row[0]

    def set_meta(self, key: str, value: object) -> None:
        """Set a meta value; call inside :meth:`write`."""
        self.conn.execute("INSERT INTO meta(key, value) VALUES (%s, %s) ON CONFLICT (key) DO UPDATE "
                          "SET value = EXCLUDED.value", (key, str(value)))

    def initialise(self, fingerprint: str, model: str, dim: int, index_kind: str, procedure: str) -> bool:
        """Record the model, embedding procedure and layout of a new gallery; False if it was already."""
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
        return int(self.get_meta("generation", "0") or 0)

    def epoch(self) -> str:
        return self.get_meta("epoch", "") or ""

    # ------------------------------------------------------------------------------------- transactions
    @contextmanager
    def write(self) -> Iterator[Any]:
        """One atomic change: the change lock, the work, the generation bumped and announced, COMMIT."""
        if self._depth:  # nested in a write (or read) of this store: part of that transaction
            yield self.conn
            return
        self._depth += 1
        try:
            with self.conn.transaction():
                self.conn.execute("SELECT pg_advisory_xact_lock(%s)", (_CHANGE_KEY,))
                yield self.conn
                generation = int(self.conn.execute(
                    "INSERT INTO meta(key, value) VALUES ('generation', '1') ON CONFLICT (key) DO UPDATE "
                    "SET value = (meta.value::bigint + 1)::text RETURNING value").fetchone()[0])
                self.conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, str(generation)))
        finally:
            self._depth -= 1

    @contextmanager
    def read(self) -> Iterator[Any]:
        """A consistent snapshot across several SELECTs (a REPEATABLE READ transaction)."""
        if self._depth:
            yield self.conn
            return
        self._depth += 1
        try:
            with self.conn.transaction():
                self.conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                yield self.conn
        finally:
            self._depth -= 1

    # ------------------------------------------------------------------------------------- people
    def person_id(self, name: str, create: bool = False) -> int | None:
        row = self.conn.execute("SELECT id FROM people WHERE name=%s", (name,)).fetchone()
        if row is not None:
            return int(row[0])
        if not create:
            return None
        row = self.conn.execute("INSERT INTO people(name, created) VALUES (%s, %s) RETURNING id",
                                (name, time.time())).fetchone()
        return int(row[0])

    def people(self) -> list[PersonRecord]:
        rows = self.conn.execute(
            "SELECT p.name, COUNT(t.id), p.created FROM people p LEFT JOIN templates t ON t.person_id = p.id "
            "GROUP BY p.id ORDER BY p.name"
        ).fetchall()
        return [PersonRecord(name, int(n), float(created)) for name, n, created in rows]

    def count(self) -> tuple[int, int]:
        """(people, templates); remembered until the generation changes (counting scans the tables, and every
        search asks for the number of people to set its threshold)."""
        if not self._depth and self._counted[0] is not None and self._counted[0] == self.generation():
            return self._counted[1]
        row = self.conn.execute(
            "SELECT (SELECT COUNT(*) FROM people), (SELECT COUNT(*) FROM templates), "
            "(SELECT value FROM meta WHERE key = 'generation')").fetchone()
        counts = (int(row[0]), int(row[1]))
        if not self._depth:  # a count inside an open transaction may include its own uncommitted changes
            self._counted = (int(row[2] or 0), counts)
        return counts

    def people_without_templates(self) -> int:
        return int(self.conn.execute(
            "SELECT COUNT(*) FROM people p WHERE NOT EXISTS (SELECT 1 FROM templates t WHERE t.person_id = p.id)"
        ).fetchone()[0])

    # ------------------------------------------------------------------------------------- templates
    def add_template(self, name: str, embedding: np.ndarray, *, source: str | None = None,
                     sha256: str | None = None, box: Sequence[float] | None = None, score: float | None = None,
                     quality: float | None = None, landmarks: np.ndarray | None = None) -> int:
        """Insert one template (creating its person); call inside :meth:`write`. Returns its id."""
        person = self.person_id(name, create=True)
        box = [None] * 4 if box is None else [float(v) for v in box]
        lm = None if landmarks is None else np.asarray(landmarks, np.float32).reshape(5, 2).tobytes()
        row = self.conn.execute(
            "INSERT INTO templates(person_id, source, sha256, x1, y1, x2, y2, score, quality, landmarks, created, "
            "embedding) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
            (person, source, sha256, *box, None if score is None else float(score),
             None if quality is None else float(quality), lm, time.time(), _blob(embedding)),
        ).fetchone()
        return int(row[0])

    def insert_template(self, record: TemplateRecord) -> None:
        """Insert a template under its own id (migration); call inside :meth:`write`."""
        person = self.person_id(record.name, create=True)
        box = [None] * 4 if record.box is None else [float(v) for v in record.box]
        lm = None if record.landmarks is None else np.asarray(record.landmarks, np.float32).tobytes()
        self.conn.execute(
            "INSERT INTO templates(id, person_id, source, sha256, x1, y1, x2, y2, score, quality, landmarks, "
            "created, embedding) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (record.id, person, record.source, record.sha256, *box, record.score, record.quality, lm,
             record.created, _blob(record.embedding)),
        )

    def after_import(self) -> None:
        """Move the id sequences past imported ids (migration); call inside :meth:`write`."""
        for table in ("people", "templates"):
            self.conn.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                              f"GREATEST((SELECT MAX(id) FROM {table}), 1))")

    def find_sha256(self, sha256: str) -> tuple[int, str] | None:
        row = self.conn.execute(
            "SELECT t.id, p.name FROM templates t JOIN people p ON p.id = t.person_id WHERE t.sha256=%s", (sha256,),
        ).fetchone()
        return None if row is None else (int(row[0]), row[1])

    def template_ids(self, name: str | None = None) -> np.ndarray:
        if name is None:
            rows = self.conn.execute("SELECT id FROM templates ORDER BY id").fetchall()
        else:
            rows = self.conn.execute("SELECT t.id FROM templates t JOIN people p ON p.id = t.person_id "
                                     "WHERE p.name=%s ORDER BY t.id", (name,)).fetchall()
        return np.array([r[0] for r in rows], dtype=np.int64)

    def template_ids_after(self, template_id: int) -> np.ndarray:
        rows = self.conn.execute("SELECT id FROM templates WHERE id > %s ORDER BY id", (int(template_id),)).fetchall()
        return np.array([r[0] for r in rows], dtype=np.int64)

    def max_template_id(self) -> int:
        return int(self.conn.execute("SELECT COALESCE(MAX(id), 0) FROM templates").fetchone()[0])

    def embeddings(self, ids: Sequence[int] | np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(ids, float32 matrix) of the given templates, or of all of them, in id order."""
        dim = int(self.get_meta("embedding_size", "512") or 512)
        if ids is None:
            rows = self.conn.execute("SELECT id, embedding FROM templates ORDER BY id").fetchall()
        else:
            wanted = [int(i) for i in np.asarray(ids, np.int64).reshape(-1)]
            rows = self.conn.execute("SELECT id, embedding FROM templates WHERE id = ANY(%s) ORDER BY id",
                                     (wanted,)).fetchall() if wanted else []
        out_ids = np.array([r[0] for r in rows], dtype=np.int64)
        if not rows:
            return out_ids, np.zeros((0, dim), np.float32)
        matrix = np.frombuffer(b"".join(bytes(r[1]) for r in rows), dtype=np.float32).reshape(len(rows), dim)
        return out_ids, matrix.copy()

    def names_of(self, ids: Sequence[int] | np.ndarray) -> dict[int, str]:
        wanted = sorted({int(i) for i in np.asarray(ids, np.int64).reshape(-1) if i >= 0})
        if not wanted:
            return {}
        rows = self.conn.execute("SELECT t.id, p.name FROM templates t JOIN people p ON p.id = t.person_id "
                                 "WHERE t.id = ANY(%s)", (wanted,)).fetchall()
        return {int(tid): name for tid, name in rows}

    def templates(self, name: str | None = None, with_embeddings: bool = False) -> list[TemplateRecord]:
        """Every template (of one person), oldest first."""
        query = (
            "SELECT t.id, p.name, t.source, t.sha256, t.x1, t.y1, t.x2, t.y2, t.score, t.quality, t.landmarks, "
            "t.created, {emb} FROM templates t JOIN people p ON p.id = t.person_id {where} ORDER BY t.id"
        ).format(emb="t.embedding" if with_embeddings else "NULL::bytea", where="WHERE p.name=%s" if name else "")
        rows = self.conn.execute(query, (name,) if name else ()).fetchall()
        out = []
        for tid, pname, source, sha, x1, y1, x2, y2, score, quality, lm, created, emb in rows:
            out.append(TemplateRecord(
                id=int(tid), name=pname, source=source, sha256=sha,
                box=None if x1 is None else (x1, y1, x2, y2), score=score, quality=quality,
                landmarks=None if lm is None else np.frombuffer(bytes(lm), np.float32).reshape(5, 2).copy(),
                created=float(created),
                embedding=np.zeros(0, np.float32) if emb is None else np.frombuffer(bytes(emb), np.float32).copy(),
            ))
        return out

    def set_embedding(self, template_id: int, embedding: np.ndarray) -> None:
        self.conn.execute("UPDATE templates SET embedding=%s WHERE id=%s", (_blob(embedding), int(template_id)))

    def remove_person(self, name: str) -> np.ndarray:
        ids = self.template_ids(name)
        self.conn.execute("DELETE FROM people WHERE name=%s", (name,))
        return ids

    def remove_template(self, template_id: int) -> str | None:
        row = self.conn.execute("SELECT p.id, p.name FROM templates t JOIN people p ON p.id = t.person_id "
                                "WHERE t.id=%s", (int(template_id),)).fetchone()
        if row is None:
            return None
        self.conn.execute("DELETE FROM templates WHERE id=%s", (int(template_id),))
        left = self.conn.execute("SELECT COUNT(*) FROM templates WHERE person_id=%s", (row[0],)).fetchone()[0]
        if left == 0:
            self.conn.execute("DELETE FROM people WHERE id=%s", (row[0],))
        return row[1]

    def rename_person(self, name: str, new_name: str) -> bool:
        person = self.person_id(name)
        if person is None:
            return False
        if new_name != name and self.person_id(new_name) is not None:
            raise GalleryError(f"{new_name!r} is already in the gallery: merge {name!r} into {new_name!r} instead",
                               self.path)
        self.conn.execute("UPDATE people SET name=%s WHERE id=%s", (new_name, person))
        return True

    def merge_people(self, name: str, into: str) -> int:
        source, target = self.person_id(name), self.person_id(into)
        moved = self.conn.execute("UPDATE templates SET person_id=%s WHERE person_id=%s", (target, source)).rowcount
        self.conn.execute("DELETE FROM people WHERE id=%s", (source,))
        return int(moved)

    def photo_copies(self, templates: list[TemplateRecord], folder: Path) -> list[TemplateRecord]:
        """The templates, those whose source photo is not on this machine pointing to a copy in ``folder`` of the
        photo the database keeps (same sha256), for ``rebuild``; the database's sources stay as they are."""
        import dataclasses

        out = []
        for template in templates:
            if template.sha256 and not (template.source and Path(template.source).is_file()):
                row = self.conn.execute("SELECT suffix, data FROM photos WHERE sha256 = %s",
                                        (template.sha256,)).fetchone()
                if row is not None:
                    path = folder / f"{template.sha256}{row[0]}"
                    if not path.exists():
                        path.write_bytes(bytes(row[1]))
                    template = dataclasses.replace(template, source=str(path))
            out.append(template)
        return out

    def integrity_ok(self) -> bool:
        """PostgreSQL checks its own pages; here: every template has a person and a vector of the right size."""
        dim = int(self.get_meta("embedding_size", "512") or 512)
        bad = self.conn.execute("SELECT COUNT(*) FROM templates WHERE length(embedding) <> %s", (4 * dim,)).fetchone()
        return int(bad[0]) == 0


class ChangeListener(threading.Thread):
    """LISTENs on :data:`CHANNEL` on a connection of its own and calls ``on_change(generation)`` after each change
    (several changes announced together: once, with the newest); reconnects when the connection drops."""

    def __init__(self, url: str, on_change: Callable[[int], None] | None = None) -> None:
        super().__init__(name="facegnet-gallery-listener", daemon=True)
        self.url = url
        self.on_change = on_change
        self._stop = threading.Event()
        self.ready = threading.Event()  # set once LISTEN is in place

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        while not self._stop.is_set():
            try:
                conn = connect(self.url)
            except GalleryError:
                self._stop.wait(1.0)
                continue
            try:
                conn.execute(f"LISTEN {CHANNEL}")
                self.ready.set()
                while not self._stop.is_set():
                    latest = None
                    for note in conn.notifies(timeout=0.25):
                        latest = max(latest or 0, int(note.payload))
                    if latest is not None:
                        self._changed(latest)
            except Exception:  # noqa: BLE001 - a dropped connection: reconnect (searches check the store anyway)
                self._stop.wait(0.5)
            finally:
                conn.close()


    def _changed(self, generation: int) -> None:
        if self.on_change is None:
            return
        try:
            self.on_change(generation)
        except Exception:  # noqa: BLE001 - following is best effort: the next search syncs anyway
            pass


class PgWriterLock:
    """The gallery's writer lock across hosts: a session-level advisory lock on a connection of its own, paired
    with a re-entrant thread lock (the interface of :class:`facegnet.locking.FileLock`). A killed holder's lock
    goes with its connection."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.path = redact(url)
        self._thread_lock = threading.RLock()
        self._depth = 0
        self._conn: Any = None

    @property
    def held(self) -> bool:
        return self._depth > 0

    def acquire(self, timeout: float | None = None) -> None:
        if not self._thread_lock.acquire(timeout=-1 if timeout is None else max(0.0, timeout)):
            raise LockTimeout(self.path, "?")
        if self._depth:
            self._depth += 1
            return
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        try:
            if self._conn is None or self._conn.closed:
                self._conn = connect(self.url)
            while not self._conn.execute("SELECT pg_try_advisory_lock(%s)", (_WRITER_KEY,)).fetchone()[0]:
                if deadline is not None and time.monotonic() >= deadline:
                    holder = self._conn.execute(
                        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objid = %s",
                        (_WRITER_KEY & 0xFFFFFFFF,)).fetchone()
                    raise LockTimeout(self.path, f"database backend {holder[0]}" if holder else "?")
                time.sleep(0.02)
        except BaseException:
            self._thread_lock.release()
            raise
        self._depth = 1

    def release(self) -> None:
        if not self._depth:
            raise RuntimeError(f"{self.path} is not locked")
        self._depth -= 1
        if not self._depth and self._conn is not None and not self._conn.closed:
            self._conn.execute("SELECT pg_advisory_unlock(%s)", (_WRITER_KEY,))
        self._thread_lock.release()

    def close(self) -> None:
        with self._thread_lock:
            if self._conn is not None:
                self._conn.close()  # also drops the advisory lock
                self._conn = None
            self._depth = 0


def open_pg_store(url: str, *, create: bool, index: str | None, writer: Callable[[], Any],
                  initial: Callable[[], tuple]) -> PgStore:
    """The PostgreSQL counterpart of :func:`facegnet.gallery.folders.open_store`."""
    store = PgStore.open(url, create=create)
    if store.get_meta("fingerprint") is None:
        if not create:
            store.close()
            raise GalleryError("no gallery in this database (enroll people first: facegnet enroll FOLDER "
                               "--database URL)", store.path)
        with writer():
            store.initialise(*initial())
    if index is not None and store.get_meta("index_kind") != index:
        with writer(), store.write():
            store.set_meta("index_kind", index)
    version = int(store.get_meta("schema_version", "0") or 0)
    if version > SCHEMA_VERSION:
        store.close()
        raise GalleryError(f"made by a newer facegnet (schema {version} > {SCHEMA_VERSION})", store.path)
    return store


__all__ = ["CHANNEL", "DATABASE_ENV", "ChangeListener", "PgStore", "PgWriterLock", "connect", "is_database_url",
           "open_pg_store", "redact"]
