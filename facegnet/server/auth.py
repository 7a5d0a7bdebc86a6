"""Access: every API request carries ``Authorization: Bearer <token>``.

The token is given (``--token`` / ``FACEGNET_TOKEN``) or generated on first start into ``server.token``
in the gallery directory, readable by its owner only. A PostgreSQL gallery also holds named tokens with a role
(:mod:`facegnet.gallery.pg_tokens`), which every server of the gallery accepts, and stops accepting within a
second of their revocation. ``--no-auth`` is accepted only on a loopback host:
a gallery holds biometric data, so it is never open to a network.
"""
from __future__ import annotations

import hmac
import ipaddress
import os
import secrets
import stat
from pathlib import Path
from typing import Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from facegnet.errors import FacegnetError
from facegnet.server.errors import ApiError

TOKEN_FILE = "server.token"
TOKEN_ENV = "FACEGNET_TOKEN"


def is_loopback(host: str) -> bool:
    """Is ``host`` this machine only (127.0.0.0/8, ::1, localhost)?"""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def token_file(gallery_dir: str | Path) -> Path:
    return Path(gallery_dir) / TOKEN_FILE


def load_or_create_token(gallery_dir: str | Path) -> str:
    """The token stored in the gallery directory, created (0600, random 256 bits) on first use."""
    path = token_file(gallery_dir)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return read_token_file(path)
    with os.fdopen(fd, "w") as out:
        out.write(secrets.token_urlsafe(32) + "\n")
    return read_token_file(path)


def read_token_file(path: Path) -> str:
    """Read a token file; refuse one that others can read (anyone with it could read the gallery)."""
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise FacegnetError(f"token file is readable by others (mode {stat.S_IMODE(mode):o}); "
                            f"run `chmod 600 {path}`", path)
    token = path.read_text().strip()
    if not token:
        raise FacegnetError("token file is empty; delete it to have a new token generated", path)
    return token


def resolve_token(gallery_dir: str | Path, given: str | None = None, no_auth: bool = False,
                  host: str = "127.0.0.1") -> str | None:
    """The token the server requires: the given one, ``FACEGNET_TOKEN``, or the gallery's token file.

    Returns None (no token required) only for ``no_auth`` on a loopback host; raises FacegnetError otherwise.
    """
    if no_auth:
        if not is_loopback(host):
            raise FacegnetError(f"--no-auth is allowed only on a loopback host (127.0.0.1, ::1), not {host}")
        return None
    token = given if given else os.environ.get(TOKEN_ENV) or None
    if token is not None:
        if len(token) < 8:
            raise FacegnetError("the token must be at least 8 characters long")
        return token
    return load_or_create_token(gallery_dir)


# Declares the scheme in the OpenAPI document (the "Authorize" button of /docs); we raise our own 401.
_BEARER = HTTPBearer(auto_error=False, description="the server's token (see `facegnet serve --help`)")


#: Requests an ``identify`` token may make besides reading: naming faces, comparing photos, the camera.
IDENTIFY_PATHS = ("/api/identify", "/api/verify", "/api/live/")


def changes_gallery(request: Request) -> bool:
    """Does this request change the gallery (or start work on it) rather than read or identify?"""
    if request.method in ("GET", "HEAD", "OPTIONS"):
        return False
    return not request.url.path.startswith(IDENTIFY_PATHS)


def bearer_key(request: Request) -> str | None:
    """The token of the request's ``Authorization: Bearer`` header, or None."""
    bearer = request.headers.get("authorization", "")
    return bearer[7:] if bearer.lower().startswith("bearer ") else None


class TokenGuard:
    """A FastAPI dependency that lets a request through only with the right bearer token.

    Args:
        token: the server's own token (every right); None, with no ``named`` tokens, turns the check off.
        named: the named tokens of a PostgreSQL gallery (:class:`facegnet.gallery.pg_tokens.TokenTable`): an
            ``enroll`` token may do everything, an ``identify`` token may read and identify only (403 otherwise).
    """

    def __init__(self, token: str | None, named: Any = None) -> None:
        self._token = None if token is None else token.encode()
        self._named = named

    @property
    def required(self) -> bool:
        return self._token is not None or self._named is not None

    def role(self, key: str | None) -> str | None:
        """``enroll`` for the server's token, a named token's role, or None for a wrong or revoked one."""
        key = (key or "").strip()
        if not key:
            return None
        if self._token is not None and hmac.compare_digest(key.encode(), self._token):  # constant time
            return "enroll"
        return self._named.role_of(key) if self._named is not None else None

    def accepts(self, key: str | None, change: bool = True) -> bool:
        """Is ``key`` a token that may make this request (a key sent another way: CompreFace's ``x-api-key``,
        DeepStack's ``api_key``)? ``change``: the request changes the gallery."""
        if not self.required:
            return True
        role = self.role(key)
        return role == "enroll" or (role == "identify" and not change)

    def refusal(self, key: str | None, change: bool, forbidden: str, missing: str) -> tuple[int, str] | None:
        """None when ``key`` may make the request, else the answer for a client API that sends its key its own
        way: (403, ``forbidden``) for a valid key without the right, (401, ``missing``) for none or a wrong one."""
        if self.accepts(key, change=change):
            return None
        return (403, forbidden) if self.role(key) is not None else (401, missing)

    def __call__(self, request: Request,
                 credentials: HTTPAuthorizationCredentials | None = Depends(_BEARER)) -> None:
        if not self.required:
            return
        if credentials is None or not credentials.credentials.strip():
            raise ApiError(401, "missing token: send the header 'Authorization: Bearer <token>'")
        role = self.role(credentials.credentials)
        if role is None:
            raise ApiError(401, "wrong token" if self._named is None else "wrong or revoked token")
        if role != "enroll" and changes_gallery(request):
            raise ApiError(403, f"this token may only identify ({role} role): enrolling, renaming, merging and "
                                "removing people need a token with the enroll role")
