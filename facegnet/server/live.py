"""The browser's camera: frames posted one at a time, tracked and named per browser session.

Each session (an id the page makes up) has its own :class:`~facegnet.live.LiveIdentifier`, exactly what
``facegnet identify --camera`` runs: detection every few frames, IoU tracking in between, names held by
voting. The page sends its next frame when the answer to the last one arrives, so a slow server lowers the
frame rate instead of building a queue. Sessions live in this process's memory; one idle for
``idle_seconds`` is ended (its faces leave).
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from facegnet.live import Frame, LiveConfig, LiveIdentifier
from facegnet.server.errors import ApiError

SESSION_ID = re.compile(r"^[A-Za-z0-9_-]{8,64}$")


@dataclass
class _Session:
    identifier: LiveIdentifier
    started: float
    last_used: float
    frames: int = 0
    events: list[dict[str, Any]] = field(default_factory=list)


class LiveSessions:
    """Live identifiers by session id, sharing the service's recogniser and gallery (under its lock)."""

    def __init__(self, service: Any, *, max_sessions: int = 8, idle_seconds: float = 60.0,
                 config: LiveConfig | None = None) -> None:
        self.service = service
        self.max_sessions = int(max_sessions)
        self.idle_seconds = float(idle_seconds)
        self.config = config or LiveConfig(threshold=service.threshold)
        self._sessions: dict[str, _Session] = {}

    def frame(self, session_id: str, rgb: np.ndarray) -> dict[str, Any]:
        """Process one frame of a session: its tracked faces (box, name, similarity) and new events."""
        if not SESSION_ID.match(session_id):
            raise ApiError(422, "session must be 8-64 letters, digits, '-' or '_'")
        with self.service.lock:
            self._expire()
            session = self._sessions.get(session_id)
            if session is None:
                if len(self._sessions) >= self.max_sessions:
                    raise ApiError(503, f"too many live sessions ({self.max_sessions}); try again later")
                now = time.perf_counter()
                identifier = LiveIdentifier(self.service.recognizer, self.service.gallery, self.config)
                session = self._sessions[session_id] = _Session(identifier, now, now)
                identifier.emit = session.events.append
            now = time.perf_counter()
            frame = Frame(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), session.frames, now, time.time(),
                          now - session.started)
            observations = session.identifier.process(frame)
            session.frames += 1
            session.last_used = now
            events, session.events[:] = list(session.events), []
        return {
            "frame": frame.index,
            "faces": [
                {"track": o.track, "box": [round(float(v), 1) for v in o.box], "name": o.name,
                 "similarity": None if o.name is None else round(float(o.similarity), 4), "detected": o.detected}
                for o in observations
            ],
            "events": events,
        }

    def end(self, session_id: str) -> dict[str, Any]:
        """End a session: every face still in view leaves."""
        with self.service.lock:
            session = self._sessions.pop(session_id, None)
            if session is None:
                raise ApiError(404, f"no live session {session_id!r}")
            session.identifier.finish()
        return {"frames": session.frames, "events": session.events}

    def _expire(self) -> None:
        now = time.perf_counter()
        for key in [k for k, s in self._sessions.items() if now - s.last_used > self.idle_seconds]:
            self._sessions.pop(key).identifier.finish()
