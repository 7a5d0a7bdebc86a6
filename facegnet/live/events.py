"""What the live pipeline tells the world: steady names, events as JSON lines, drawings and a summary.

- :class:`NameVoter` holds a track's name steady: the name shown is the most frequent of its recent
  identifications, so one poor frame does not make it flicker.
- Events are JSON objects, one per line: ``appeared`` when a face has been seen long enough to be a face,
  ``renamed`` when its voted name changes afterwards, ``left`` when it is gone (``reason``: ``gone``, ``end``
  of the source, or ``changed``: someone else now stands where it was, who appears as a new face), and one
  ``summary`` at the end. Each face event holds ``event``, ``time`` (ISO 8601, UTC), ``track`` (id), ``name`` (or
  ``unknown``), ``similarity`` and ``box`` ([x1, y1, x2, y2] in pixels), plus ``frame`` and ``offset``
  (seconds into the source).
- :func:`draw` puts boxes, names, similarities and the frame rate on a frame.
"""
from __future__ import annotations

import json
import sys
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import IO, Any

import numpy as np

from facegnet.draw import KNOWN_COLOUR, PENDING_COLOUR, UNKNOWN_COLOUR, draw_faces, face_label
from facegnet.gallery import UNKNOWN


class NameVoter:
    """Majority vote over a track's recent identifications.

    Args:
        window: how many recent identifications vote.
    """

    def __init__(self, window: int = 7) -> None:
        self.votes: deque[tuple[str, float]] = deque(maxlen=max(1, int(window)))
        self._name: str | None = None

    def add(self, name: str, similarity: float) -> None:
        """Record one identification; the held name changes only when another name out-votes it."""
        self.votes.append((name, float(similarity)))
        counts = Counter(n for n, _ in self.votes)
        best = max(counts.values())
        leaders = [n for n, c in counts.items() if c == best]
        if self._name not in leaders:  # ties keep the current name; otherwise the best-scoring leader
            self._name = max(leaders, key=self._mean)

    def _mean(self, name: str) -> float:
        sims = [s for n, s in self.votes if n == name]
        return float(np.mean(sims)) if sims else float("nan")

    @property
    def name(self) -> str | None:
        """The held name (None before the first identification)."""
        return self._name

    @property
    def similarity(self) -> float:
        """Mean similarity of the recent identifications that named the held name."""
        return self._mean(self._name) if self._name is not None else float("nan")

    def __len__(self) -> int:
        return len(self.votes)


@dataclass
class Observation:
    """A tracked face as shown on one frame."""

    track: int
    box: np.ndarray  # (4,) x1, y1, x2, y2
    name: str | None  # None until identified
    similarity: float
    detected: bool  # the box comes from this frame's detection (else it is predicted)
    frame: int = -1  # index of the frame the box belongs to
    velocity: np.ndarray | None = None  # (4,) box change per frame, to move the box on to later frames

    @property
    def known(self) -> bool:
        return self.name not in (None, UNKNOWN)

    def moved_to(self, frame: int, max_steps: int) -> "Observation":
        """This face predicted onto a later frame (its box moved on with its velocity)."""
        steps = min(max(frame - self.frame, 0), max_steps)
        box = self.box if self.velocity is None else self.box + steps * self.velocity
        return replace(self, box=box.astype(np.float32), detected=False, frame=frame)


def _box(box: np.ndarray) -> list[float]:
    return [round(float(v), 1) for v in box]


def _similarity(value: float) -> float | None:
    return None if value is None or not np.isfinite(value) else round(float(value), 4)


def iso_time(wall_time: float) -> str:
    """ISO 8601 UTC with milliseconds: 2026-11-28T05:15:14.123Z."""
    stamp = datetime.fromtimestamp(wall_time, tz=timezone.utc)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"


def face_event(kind: str, *, track: int, name: str | None, similarity: float, box: np.ndarray,
               wall_time: float, frame: int, offset: float, **extra: Any) -> dict[str, Any]:
    """One face event as a JSON-ready dict (keys in a fixed, readable order)."""
    event = {
        "event": kind,
        "time": iso_time(wall_time),
        "track": int(track),
        "name": name or UNKNOWN,
        "similarity": _similarity(similarity),
        "box": _box(box),
        "frame": int(frame),
        "offset": round(float(offset), 3),
    }
    event.update(extra)
    return event


class EventWriter:
    """Writes events as JSON lines (flushed at once, so a pipe reader sees them live)."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self.stream = stream if stream is not None else sys.stdout
        self.count = 0

    def __call__(self, event: dict[str, Any]) -> None:
        self.stream.write(json.dumps(event, ensure_ascii=False) + "\n")
        self.stream.flush()
        self.count += 1


class EventSinks:
    """Several event sinks as one (the JSON lines writer and the MQTT publisher)."""

    def __init__(self, *sinks: Callable[[dict[str, Any]], None]) -> None:
        self.sinks = [s for s in sinks if s is not None]

    def __call__(self, event: dict[str, Any]) -> None:
        for sink in self.sinks:
            sink(event)


@dataclass
class Summary:
    """Counts for the end of a run."""

    source: str
    frames_read: int = 0
    frames_processed: int = 0
    frames_dropped: int = 0
    reconnects: int = 0
    seconds: float = 0.0
    detections: int = 0  # detector runs
    embeddings: int = 0  # faces embedded
    tracks: int = 0  # faces that appeared
    people: dict[str, dict[str, float]] = field(default_factory=dict)  # name -> appearances, seconds
    latency_ms: list[float] = field(default_factory=list, repr=False)  # capture -> frame shown, per frame
    name_latency_ms: list[float] = field(default_factory=list, repr=False)  # capture -> name, per new face
    ended: str = "end of source"
    error: Exception | None = field(default=None, repr=False)  # why the source failed for good, if it did

    @property
    def fps(self) -> float:
        return self.frames_processed / self.seconds if self.seconds > 0 else 0.0

    def add_visit(self, name: str, seconds: float) -> None:
        entry = self.people.setdefault(name, {"appearances": 0, "seconds": 0.0})
        entry["appearances"] += 1
        entry["seconds"] += max(0.0, seconds)

    def to_dict(self) -> dict[str, Any]:
        lat = np.asarray(self.latency_ms, np.float64)
        named = np.asarray(self.name_latency_ms, np.float64)
        return {
            "event": "summary",
            "source": self.source,
            "ended": self.ended,
            "frames_read": self.frames_read,
            "frames_processed": self.frames_processed,
            "frames_dropped": self.frames_dropped,
            "reconnects": self.reconnects,
            "seconds": round(self.seconds, 3),
            "fps": round(self.fps, 2),
            "frame_latency_ms_p50": round(float(np.percentile(lat, 50)), 1) if lat.size else None,
            "frame_latency_ms_p95": round(float(np.percentile(lat, 95)), 1) if lat.size else None,
            "name_latency_ms_p50": round(float(np.percentile(named, 50)), 1) if named.size else None,
            "name_latency_ms_p95": round(float(np.percentile(named, 95)), 1) if named.size else None,
            "detections": self.detections,
            "embeddings": self.embeddings,
            "tracks": self.tracks,
            "people": {n: {"appearances": int(v["appearances"]), "seconds": round(v["seconds"], 2)}
                       for n, v in sorted(self.people.items())},
        }

    def text(self) -> str:
        """A few human lines (for stderr)."""
        d = self.to_dict()
        lines = [
            f"{self.source}: {d['ended']}; {d['frames_processed']} frames processed in {d['seconds']:.1f} s "
            f"({d['fps']:.1f} frames/s), {d['frames_dropped']} stale frames skipped"
            + (f", {d['reconnects']} reconnections" if d["reconnects"] else ""),
            f"{d['detections']} detections, {d['embeddings']} faces embedded, {d['tracks']} faces appeared",
        ]
        if d["name_latency_ms_p50"] is not None:
            lines.append(f"capture-to-name latency of a new face: p50 {d['name_latency_ms_p50']:.0f} ms, "
                         f"p95 {d['name_latency_ms_p95']:.0f} ms; capture-to-display of a frame: p50 "
                         f"{d['frame_latency_ms_p50']:.0f} ms, p95 {d['frame_latency_ms_p95']:.0f} ms")
        for name, v in d["people"].items():
            lines.append(f"  {name}: {v['appearances']} appearance(s), {v['seconds']:.1f} s")
        return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ drawing
def draw(image: np.ndarray, observations: Sequence[Observation], fps: float | None = None) -> np.ndarray:
    """Draw each face's box, name and similarity (and the frame rate) onto ``image`` (BGR) in place.

    The drawing is :func:`facegnet.draw.draw_faces`, the one ``identify --annotate`` uses: names in any script.
    """
    faces = [(obs.box, face_label(obs.name, obs.similarity),
              PENDING_COLOUR if obs.name is None else KNOWN_COLOUR if obs.known else UNKNOWN_COLOUR)
             for obs in observations]
    return draw_faces(image, faces, bgr=True, corner_text=None if fps is None else f"{fps:.1f} FPS")


__all__ = ["UNKNOWN", "NameVoter", "Observation", "EventWriter", "EventSinks", "Summary", "face_event", "iso_time",
           "draw"]
