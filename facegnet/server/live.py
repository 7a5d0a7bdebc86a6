"""The browser's camera: frames posted one at a time, tracked and named per browser session.

Each session (an id the page makes up) has its own :class:`~facegnet.live.LiveIdentifier`, exactly what
``facegnet identify --camera`` runs: detection every few frames, IoU tracking in between, names held by
voting. The page sends its next frame when the answer to the last one arrives, so a slow server lowers the
frame rate instead of building a queue. One idle for ``idle_seconds`` is ended (its faces leave).

With several worker processes (``facegnet serve --workers N``) a session's frames reach any of them: its state
then lives in ``shared_dir`` (a private folder the server makes), one file per session written after each
frame, and a per-session file lock keeps its frames in order. A worker keeps the state it wrote in memory and
reads the file only when another worker has written it since.
"""
from __future__ import annotations

import fcntl
import os
import pickle
import re
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2

from facegnet.io import Decoded
from facegnet.live import Frame, LiveConfig, LiveIdentifier
from facegnet.server.errors import ApiError

SESSION_ID = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
_NOT_STATE = ("recognizer", "gallery", "emit")  # what each process attaches itself


@dataclass
class _Session:
    identifier: LiveIdentifier
    started: float  # time.monotonic(): one clock for every process of this machine
    last_used: float
    frames: int = 0
    events: list[dict[str, Any]] = field(default_factory=list)
    stamp: tuple[int, int] | None = None  # (inode, mtime) of the state file this process wrote or read last


class LiveSessions:
    """Live identifiers by session id, sharing the service's recogniser and gallery (under its lock).

    Args:
        service: the :class:`~facegnet.server.service.GalleryService`.
        max_sessions: sessions at once (a new one past it gets 503).
        idle_seconds: a session without frames this long is ended.
        config: the live pipeline's knobs (default: the service's threshold).
        shared_dir: where sessions live when several processes serve them (None: this process's memory).
    """

    def __init__(self, service: Any, *, max_sessions: int = 8, idle_seconds: float = 60.0,
                 config: LiveConfig | None = None, shared_dir: str | Path | None = None) -> None:
        self.service = service
        self.max_sessions = int(max_sessions)
        self.idle_seconds = float(idle_seconds)
        self.config = config or LiveConfig(threshold=service.threshold)
        self.shared_dir = None if shared_dir is None else Path(shared_dir)
        self._sessions: dict[str, _Session] = {}
        #: Also given every event, with its ``session`` (e.g. a :class:`facegnet.live.mqtt.MqttPublisher`).
        self.publish: Callable[[dict[str, Any]], None] | None = None

    def frame(self, session_id: str, photo: Decoded) -> dict[str, Any]:
        """Process one frame of a session: its tracked faces (box, name, similarity) and new events."""
        if not SESSION_ID.match(session_id):
            raise ApiError(422, "session must be 8-64 letters, digits, '-' or '_'")
        with self._locked(session_id), self.service.lock:
            self._expire(current=session_id)
            session = self._load(session_id)
            if session is None:
                if self._count() >= self.max_sessions:
                    raise ApiError(503, f"too many live sessions ({self.max_sessions}); try again later")
                now = time.monotonic()
                identifier = LiveIdentifier(self.service.recognizer, self.service.gallery, self.config)
                session = self._sessions[session_id] = _Session(identifier, now, now)
                identifier.emit = session.events.append
            now = time.monotonic()
            frame = Frame(cv2.cvtColor(photo.array, cv2.COLOR_RGB2BGR), session.frames, time.perf_counter(),
                          time.time(), now - session.started)
            observations = session.identifier.process(frame)
            session.frames += 1
            session.last_used = now
            events, session.events[:] = list(session.events), []
            self._save(session_id, session)
        self._published(session_id, events)
        sx, sy = photo.scale  # a frame larger than the server's maximum side was decoded reduced
        return {
            "frame": frame.index,
            "faces": [
                {"track": o.track, "box": [round(float(v) * (sx, sy)[i % 2], 1) for i, v in enumerate(o.box)],
                 "name": o.name, "similarity": None if o.name is None else round(float(o.similarity), 4),
                 "detected": o.detected}
                for o in observations
            ],
            "events": events,
        }

    def end(self, session_id: str) -> dict[str, Any]:
        """End a session: every face still in view leaves."""
        if not SESSION_ID.match(session_id):
            raise ApiError(404, "no such live session")
        with self._locked(session_id), self.service.lock:
            session = self._load(session_id)
            if session is None:
                raise ApiError(404, f"no live session {session_id!r}")
            self._forget(session_id)
            session.identifier.finish()
        self._published(session_id, session.events)
        return {"frames": session.frames, "events": session.events}

    def _published(self, session_id: str, events: list[dict[str, Any]]) -> None:
        if self.publish is not None:
            for event in events:
                self.publish({**event, "session": session_id})

    # ------------------------------------------------------------------------------------------ state
    def _locked(self, session_id: str):
        """Across processes: one frame of a session at a time (nothing to lock within one process)."""
        return nullcontext() if self.shared_dir is None else _flock(self.shared_dir / f"{session_id}.lock")

    def _state_file(self, session_id: str) -> Path:
        assert self.shared_dir is not None
        return self.shared_dir / f"{session_id}.state"

    def _load(self, session_id: str) -> _Session | None:
        """The session as last written by any process (from memory when this process wrote it last)."""
        cached = self._sessions.get(session_id)
        if self.shared_dir is None:
            return cached
        try:
            info = os.stat(self._state_file(session_id))
        except FileNotFoundError:
            self._sessions.pop(session_id, None)  # ended or expired by another process
            return None
        stamp = (info.st_ino, info.st_mtime_ns)
        if cached is not None and cached.stamp == stamp:
            return cached
        state = pickle.loads(self._state_file(session_id).read_bytes())  # a file this server wrote itself
        identifier = LiveIdentifier.__new__(LiveIdentifier)
        identifier.__dict__.update(state.pop("identifier"))
        identifier.recognizer, identifier.gallery = self.service.recognizer, self.service.gallery
        session = _Session(identifier, **state)
        identifier.emit = session.events.append
        session.stamp = stamp
        self._sessions[session_id] = session
        return session

    def _save(self, session_id: str, session: _Session) -> None:
        if self.shared_dir is None:
            return
        identifier = {k: v for k, v in vars(session.identifier).items() if k not in _NOT_STATE}
        state = {"identifier": identifier, "started": session.started, "last_used": session.last_used,
                 "frames": session.frames, "events": session.events}
        path = self._state_file(session_id)
        fd, scratch = tempfile.mkstemp(dir=self.shared_dir, prefix=".state-")
        with os.fdopen(fd, "wb") as out:
            pickle.dump(state, out, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(scratch, path)
        info = os.stat(path)
        session.stamp = (info.st_ino, info.st_mtime_ns)

    def _forget(self, session_id: str) -> None:
        self._sessions.pop(session_id, None)
        if self.shared_dir is not None:
            self._state_file(session_id).unlink(missing_ok=True)  # (its lock file stays: another may wait on it)

    def _count(self) -> int:
        if self.shared_dir is None:
            return len(self._sessions)
        return sum(1 for _ in self.shared_dir.glob("*.state"))

    def _expire(self, current: str | None = None) -> None:
        """End the sessions idle for ``idle_seconds``: their faces leave (``left`` events, published).

        With several processes a session's state is its file, whoever wrote it last: the process that finds the
        file idle ends the session from it, once, under the session's lock (taken without waiting: a session
        whose lock is held is in use; ``current`` is the one whose lock this process holds already). Copies
        this process kept of sessions ended elsewhere are dropped unseen: their faces left there.
        """
        now = time.monotonic()
        if self.shared_dir is None:
            for key in [k for k, s in self._sessions.items() if now - s.last_used > self.idle_seconds]:
                session = self._sessions.pop(key)
                session.identifier.finish()
                self._published(key, session.events)  # its faces left
            return
        for path in self.shared_dir.glob("*.state"):
            key = path.stem
            if not self._idle(path):
                continue
            with nullcontext(True) if key == current else _try_flock(self.shared_dir / f"{key}.lock") as held:
                if not held or not self._idle(path):  # in use, or used again meanwhile
                    continue
                session = self._load(key)
                if session is None:
                    continue
                self._forget(key)
                session.identifier.finish()
            self._published(key, session.events)  # its faces left
        for key in [k for k in self._sessions if not self._state_file(k).exists()]:
            del self._sessions[key]

    def _idle(self, path: Path) -> bool:
        """Whether a session's state file was last written ``idle_seconds`` ago or more (False: gone)."""
        try:
            return path.stat().st_mtime < time.time() - self.idle_seconds
        except FileNotFoundError:
            return False


@contextmanager
def _try_flock(path: Path) -> Iterator[bool]:
    """The lock on ``path`` if no one holds it (True), else nothing (False), without waiting."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)  # closing releases the lock


@contextmanager
def _flock(path: Path) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock
