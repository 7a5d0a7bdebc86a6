"""Following faces from frame to frame between detections: IoU matching with a constant-velocity guess.

Detection (MTCNN) is the expensive step of a live pipeline, so it runs only every few frames. In between,
each track's box moves with its recent velocity; when a detection runs, its faces are matched to the tracks
by the overlap (intersection over union) of their boxes, greedily from the best overlap down. Unmatched
faces start new tracks; a track that detection misses several times in a row has left.

The tracker knows nothing about identities: the caller hangs names on track ids, and :meth:`Tracker.split`s a
track whose face stopped matching its name (another person in the same place, as after a cut).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torchvision.ops import box_iou

from facegnet.detection.detector import Face


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union of every box of ``a`` (N, 4) with every box of ``b`` (M, 4): (N, M).

    torchvision's ``box_iou`` does the arithmetic (the package's one IoU); boxes without area overlap nothing.
    """
    a = torch.as_tensor(np.asarray(a, np.float64).reshape(-1, 4))
    b = torch.as_tensor(np.asarray(b, np.float64).reshape(-1, 4))
    return np.nan_to_num(box_iou(a, b).numpy(), nan=0.0)


@dataclass
class Track:
    """One face followed over time."""

    id: int
    face: Face  # the latest detection matched to this track (its landmarks are what gets aligned)
    first_frame: int  # frame index of the first detection
    last_frame: int  # frame index of the latest matched detection
    box: np.ndarray = field(default=None)  # type: ignore[assignment]  # current box: detected or predicted
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(4, np.float32))  # box change per frame
    hits: int = 1  # detections matched to this track
    misses: int = 0  # detections in a row that did not find it

    def __post_init__(self) -> None:
        if self.box is None:
            self.box = np.asarray(self.face.box, np.float32).copy()


@dataclass
class TrackUpdate:
    """What one detection did to the tracks."""

    created: list[Track]
    matched: list[Track]  # existing tracks found again (their ``face`` is this frame's detection)
    ended: list[Track]  # tracks that left (missed too often); they are no longer in ``Tracker.tracks``


class Tracker:
    """IoU tracker.

    Args:
        iou_threshold: least overlap between a track's (predicted) box and a detection to match them.
        max_misses: a confirmed track ends after this many detections in a row without it.
        min_hits: detections a track needs to be confirmed; an unconfirmed track ends at its first miss
            (a one-off false detection never becomes a person).
        max_predict: frames a box keeps moving with its velocity after its last detection.
    """

    def __init__(self, iou_threshold: float = 0.3, max_misses: int = 3, min_hits: int = 2,
                 max_predict: int = 15) -> None:
        self.iou_threshold = float(iou_threshold)
        self.max_misses = max(1, int(max_misses))
        self.min_hits = max(1, int(min_hits))
        self.max_predict = max(0, int(max_predict))
        self.tracks: list[Track] = []
        self._next_id = 1

    def confirmed(self, track: Track) -> bool:
        """Has this track been detected often enough to count as a face?"""
        return track.hits >= self.min_hits

    @property
    def needs_detection(self) -> bool:
        """True when a detection should run now: no tracks, a new track to confirm, or a track just missed."""
        return not self.tracks or any(t.misses or not self.confirmed(t) for t in self.tracks)

    def predict(self, frame: int) -> None:
        """Move every box to where its velocity puts it at ``frame`` (a frame without detection)."""
        for track in self.tracks:
            steps = min(frame - track.last_frame, self.max_predict)
            track.box = (np.asarray(track.face.box, np.float32) + steps * track.velocity).astype(np.float32)

    def update(self, faces: Sequence[Face], frame: int) -> TrackUpdate:
        """Match this frame's detections to the tracks; start, confirm and end tracks."""
        self.predict(frame)
        pairs: list[tuple[Track, Face]] = []
        unmatched = list(range(len(faces)))
        if self.tracks and faces:
            overlap = iou_matrix(np.stack([t.box for t in self.tracks]), np.stack([f.box for f in faces]))
            taken_t, taken_f = set(), set()
            for flat in np.argsort(-overlap, axis=None):  # greedy, best overlap first
                ti, fi = divmod(int(flat), len(faces))
                if overlap[ti, fi] < self.iou_threshold:
                    break
                if ti in taken_t or fi in taken_f:
                    continue
                taken_t.add(ti)
                taken_f.add(fi)
                pairs.append((self.tracks[ti], faces[fi]))
            unmatched = [i for i in range(len(faces)) if i not in taken_f]
        matched_ids = set()
        for track, face in pairs:
            gap = max(1, frame - track.last_frame)
            step = (np.asarray(face.box, np.float32) - np.asarray(track.face.box, np.float32)) / gap
            track.velocity = (0.5 * track.velocity + 0.5 * step).astype(np.float32)  # smoothed
            track.face, track.box = face, np.asarray(face.box, np.float32).copy()
            track.last_frame, track.hits, track.misses = frame, track.hits + 1, 0
            matched_ids.add(track.id)
        ended, kept = [], []
        for track in self.tracks:
            if track.id not in matched_ids:
                track.misses += 1
                if track.misses >= self.max_misses or not self.confirmed(track):
                    ended.append(track)
                    continue
            kept.append(track)
        created = []
        for i in unmatched:
            track = Track(self._next_id, faces[i], frame, frame)
            self._next_id += 1
            created.append(track)
            kept.append(track)
        self.tracks = kept
        return TrackUpdate(created, [t for t, _ in pairs], ended)

    def split(self, track: Track, frame: int) -> Track:
        """Someone else now stands where ``track`` is (its face stopped matching it): the same box continues as
        a new, already confirmed track with a new id; the old one is gone. Returns the new track."""
        new = Track(self._next_id, track.face, frame, frame, hits=max(track.hits, self.min_hits))
        self._next_id += 1
        self.tracks = [new if t.id == track.id else t for t in self.tracks]
        return new

    def clear(self) -> list[Track]:
        """End every track (the source ended); returns them."""
        ended, self.tracks = self.tracks, []
        return ended


__all__ = ["Track", "TrackUpdate", "Tracker", "iou_matrix"]
