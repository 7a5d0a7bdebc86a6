"""Named API tokens with a role, kept in a PostgreSQL gallery's ``tokens`` table, so every server of the gallery
knows them and a revocation reaches all of them.

A token is shown once, when it is made; the table keeps its SHA-256 only (tokens are 256 random bits, so a
plain hash cannot be reversed). Roles:

- ``enroll``: everything the API offers (enrol, rename, merge, remove, identify);
- ``identify``: identify, verify and the camera only (a camera's key cannot change or delete people).

A server asks the database about a token at most every :data:`RECHECK_SECONDS`, so a revoked token stops
working on every server within that time.
"""
from __future__ import annotations

import hashlib
import secrets
import threading
import time
from typing import Any

from facegnet.errors import GalleryError
from facegnet.gallery.pg_store import connect, redact

#: Role name → what it allows.
ROLES = {"enroll": "enrol, rename, merge and remove people, and identify", "identify": "identify only"}
#: Longest time a server trusts its last answer about a token (revocation reaches every server within it).
RECHECK_SECONDS = 0.5


def digest(token: str) -> str:
    return hashlib.sha256(token.strip().encode()).hexdigest()


class TokenTable:
    """The named tokens of one PostgreSQL gallery (thread-safe: one connection behind a lock)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.path = redact(url)
        self._lock = threading.Lock()
        self._conn: Any = None
        self._answers: dict[str, tuple[str | None, float]] = {}  # digest → (role or None, when asked)

    def _execute(self, sql: str, params: tuple = ()) -> Any:
        with self._lock:
            if self._conn is None or self._conn.closed:
                self._conn = connect(self.url)
            try:
                return self._conn.execute(sql, params)
            except Exception as exc:
                if type(exc).__name__ == "UndefinedTable":
                    raise GalleryError("no gallery in this database (enroll people first)", self.path) from None
                raise

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def add(self, name: str, role: str) -> str:
        """Make a token called ``name`` with ``role``; returns the token (shown once, never stored)."""
        name = " ".join(str(name).split())
        if not name:
            raise GalleryError("a token needs a name")
        if role not in ROLES:
            raise GalleryError(f"unknown role {role!r} (choose from {', '.join(ROLES)})")
        token = secrets.token_urlsafe(32)
        row = self._execute("INSERT INTO tokens(name, digest, role, created) VALUES (%s, %s, %s, %s) "
                            "ON CONFLICT (name) DO NOTHING RETURNING name",
                            (name, digest(token), role, time.time())).fetchone()
        if row is None:
            raise GalleryError(f"a token named {name!r} exists already (revoke it, or choose another name)",
                               self.path)
        return token

    def revoke(self, name: str) -> None:
        """Revoke the token called ``name`` (GalleryError if there is no such live token)."""
        row = self._execute("UPDATE tokens SET revoked = %s WHERE name = %s AND revoked IS NULL RETURNING name",
                            (time.time(), name)).fetchone()
        if row is None:
            raise GalleryError(f"no live token named {name!r}", self.path)

    def list(self) -> list[dict[str, Any]]:
        rows = self._execute("SELECT name, role, created, revoked FROM tokens ORDER BY name").fetchall()
        return [{"name": n, "role": r, "created": c, "revoked": v} for n, r, c, v in rows]

    def role_of(self, token: str) -> str | None:
        """The role of a live token, or None for an unknown or revoked one (asked at most every
        :data:`RECHECK_SECONDS` per token)."""
        key = digest(token)
        now = time.monotonic()
        cached = self._answers.get(key)
        if cached is not None and now - cached[1] < RECHECK_SECONDS:
            return cached[0]
        row = self._execute("SELECT role FROM tokens WHERE digest = %s AND revoked IS NULL", (key,)).fetchone()
        role = None if row is None else str(row[0])
        if len(self._answers) > 10_000:  # bounded: wrong tokens are remembered too
            self._answers.clear()
        self._answers[key] = (role, now)
        return role


__all__ = ["ROLES", "RECHECK_SECONDS", "TokenTable", "digest"]
