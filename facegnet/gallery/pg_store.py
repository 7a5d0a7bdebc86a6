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
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np

from facegnet.errors import GalleryError
from facegnet.gallery.folders import prepare_store
from facegnet.gallery.tables import SqlTables, TemplateRecord
from facegnet.locking import ExclusiveLock, LockTimeout

#: Environment variable naming the gallery database (``postgresql://…``) used when none is given.
DATABASE_ENV = "FACEGNET_DATABASE"
#: The channel every committed change is announced on (payload: the new generation).
CHANNEL = "facegnet_gallery"
# Advisory lock keys (any two distinct 64-bit numbers): one for each change, one for a long writer (rebuild).
_CHANGE_KEY = 0x66676E6574_01
_WRITER_KEY = 0x66676E6574_02
_NO_GALLERY = "no gallery in this database (enroll people first: facegnet enroll FOLDER --database URL)"

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


class PgStore(SqlTables):
    """The gallery database in PostgreSQL. Open with :meth:`open`; use :meth:`write` for every change.

    The queries that read the same in SQLite are in :class:`~facegnet.gallery.tables.SqlTables`; here are
    PostgreSQL's own. Not thread-safe on its own (one connection): the gallery uses it under its mutex.
    """

    MARK = "%s"
    NULL_BLOB = "NULL::bytea"

    def __init__(self, conn: Any, url: str) -> None:
        self.conn = conn
        self.url = url
        self.path = redact(url)  # what messages name
        self._depth = 0  # nesting of write()/read()
        self.listener: ChangeListener | None = None

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
            raise GalleryError(_NO_GALLERY, store.path)
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

    # ------------------------------------------------------------------------------------- dialect
    def _insert(self, sql: str, params: Sequence[Any]) -> int:
        return int(self._execute(sql + " RETURNING id", params).fetchone()[0])

    def _select_in(self, query: str, column: str, ids: list[int]) -> list[Any]:
        if not ids:
            return []
        return self.conn.execute(query.format(f"{column} = ANY(%s)"), (ids,)).fetchall()

    # ------------------------------------------------------------------------------------- PostgreSQL's own
    def add_templates(self, names: Sequence[str], embeddings: np.ndarray, sources: Sequence[str | None],
                      sha256s: Sequence[str | None]) -> list[int]:
        """Insert many templates in a few round trips instead of one per template: the new people in one INSERT,
        the template ids drawn from their sequence in one query, the rows in one binary COPY. Call inside
        :meth:`write` (its transaction, lock and announcement hold for the whole batch)."""
        if not len(names):
            return []
        now = time.time()
        self.conn.execute(  # new people, in order of first appearance (ids as one at a time would give them)
            "INSERT INTO people(name, created) SELECT u.name, %s FROM unnest(%s::text[]) WITH ORDINALITY AS u(name, n) "
            "WHERE NOT EXISTS (SELECT 1 FROM people p WHERE p.name = u.name) ORDER BY u.n",
            (now, list(dict.fromkeys(names))))
        person = dict(self.conn.execute("SELECT name, id FROM people WHERE name = ANY(%s)",
                                        (list(set(names)),)).fetchall())
        ids = sorted(int(r[0]) for r in self.conn.execute(
            "SELECT nextval(pg_get_serial_sequence('templates', 'id')) FROM generate_series(1, %s)", (len(names),)))
        vectors = np.ascontiguousarray(np.asarray(embeddings, np.float32).reshape(len(names), -1))
        copying = "COPY templates (id, person_id, source, sha256, created, embedding) FROM STDIN (FORMAT BINARY)"
        with self.conn.cursor() as cursor, cursor.copy(copying) as copy:
            copy.set_types(["int8", "int8", "text", "text", "float8", "bytea"])
            for template_id, name, vector, source, sha in zip(ids, names, vectors, sources, sha256s):
                copy.write_row((template_id, person[name], source, sha, now, vector.tobytes()))
        return ids

    def _in_transaction(self) -> bool:
        return bool(self._depth)

    def after_import(self) -> None:
        """Move the id sequences past imported ids (migration); call inside :meth:`write`."""
        for table in ("people", "templates"):
            self.conn.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                              f"GREATEST((SELECT MAX(id) FROM {table}), 1))")

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


class PgWriterLock(ExclusiveLock):
    """The gallery's writer lock across hosts: a session-level advisory lock on a connection of its own, paired
    with a re-entrant thread lock (as :class:`facegnet.locking.FileLock`). A killed holder's lock goes with its
    connection."""

    def __init__(self, url: str) -> None:
        super().__init__()
        self.url = url
        self.path = redact(url)
        self._conn: Any = None

    def _take(self, deadline: float | None) -> None:
        if self._conn is None or self._conn.closed:
            self._conn = connect(self.url)
        while not self._conn.execute("SELECT pg_try_advisory_lock(%s)", (_WRITER_KEY,)).fetchone()[0]:
            if deadline is not None and time.monotonic() >= deadline:
                holder = self._conn.execute(
                    "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objid = %s",
                    (_WRITER_KEY & 0xFFFFFFFF,)).fetchone()
                raise LockTimeout(self.path, f"database backend {holder[0]}" if holder else "?")
            time.sleep(0.02)

    def _drop(self) -> None:
        if self._conn is not None and not self._conn.closed:
            self._conn.execute("SELECT pg_advisory_unlock(%s)", (_WRITER_KEY,))

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()  # also drops the advisory lock
            self._conn = None


def open_pg_store(url: str, *, create: bool, index: str | None, writer: Callable[[], Any],
                  initial: Callable[[], tuple]) -> PgStore:
    """The PostgreSQL counterpart of :func:`facegnet.gallery.folders.open_store`."""
    store = PgStore.open(url, create=create)
    return prepare_store(store, create=create, index=index, writer=writer, initial=initial, missing=_NO_GALLERY,
                         where=store.path)


__all__ = ["CHANNEL", "DATABASE_ENV", "ChangeListener", "PgStore", "PgWriterLock", "connect", "is_database_url",
           "open_pg_store", "redact"]
