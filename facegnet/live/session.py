"""The live identification loop: frames in, tracked and named faces, events, a window or a recording out.

:class:`LiveIdentifier` does the per-frame work and nothing else (no I/O besides the events it emits):

- detection runs every ``detect_every`` processed frames, and at once when there are no tracks, when a
  new track awaits confirmation or when a track was just missed (so arrivals and departures are seen
  quickly while a steady scene costs little);
- between detections the tracker moves the boxes (:mod:`facegnet.live.tracker`);
- a face is embedded when its track is new, at each detection until it has ``min_votes`` identifications,
  and then every ``embed_every`` frames; each identification votes for the track's name
  (:class:`~facegnet.live.events.NameVoter`);
- a track is re-checked against its own face: when a new embedding of it matches none of its recent ones
  (similarity below ``same_face``, the card's verification threshold), someone else stands there, and the
  track is split: the old face leaves (``reason: "changed"``) and a new one appears with its own name, its
  votes starting afresh. A scene cut (the frame's thumbnail changes by more than ``cut_threshold``: another
  camera, an edited video) runs detection and re-identifies every face at once, so no old name outlives it.

:class:`BackgroundIdentifier` runs its slow frames (detection, embedding) on a worker thread so that a
camera's frames are shown at its own pace. :func:`facegnet.live.run.run_live` drives either from a capture.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import cv2
import numpy as np

from facegnet.errors import FacegnetError
from facegnet.live.capture import Frame
from facegnet.live.events import NameVoter, Observation, face_event
from facegnet.live.tracker import Track, Tracker
from facegnet.live.window import Recorder, Window, check_window_support  # noqa: F401 (re-exported)

Emit = Callable[[dict[str, Any]], None]


@dataclass
class LiveConfig:
    """Knobs of the live pipeline (defaults suit a 640×480 webcam on a laptop CPU)."""

    detect_every: int = 5  # processed frames between detections when nothing changes
    embed_every: int = 10  # frames between re-identifications of a known track
    min_votes: int = 3  # a new track is identified at each detection until it has this many votes
    vote_window: int = 7  # recent identifications that vote for a track's name
    iou_threshold: float = 0.3  # least box overlap to continue a track
    max_misses: int = 3  # detections in a row without a face before it has left
    min_hits: int = 2  # detections before a face counts (suppresses one-off false detections)
    threshold: float | None = None  # open-set threshold (default: the gallery's, for its number of templates)
    aggregate: str = "max"  # score a person by the best ("max") or "mean" of their templates
    # A track's new embedding below this similarity to all of its recent ones is someone else (default: the
    # model card's verification threshold: two photos of different people pass it 1% of the time).
    same_face: float | None = None
    # Mean absolute change (0-1) of a 32x32 grey thumbnail between processed frames above which the scene was
    # cut: everyone is re-detected and re-identified at once. Cuts between 100 pairs of LFW photos changed
    # 0.13 or more (median 0.25), a photo moved 8 px in a 320-px frame 0.06-0.10, 20% more light
    # 0.07-0.11; a false alarm costs one detection and embedding, nothing else.
    cut_threshold: float = 0.12
    recent_embeddings: int = 4  # a track's embeddings its new ones are compared with

    def __post_init__(self) -> None:
        if self.detect_every < 1 or self.embed_every < 1:
            raise FacegnetError("--detect-every and --embed-every must be at least 1")


@dataclass
class _TrackInfo:
    """What the identifier knows about one track beyond its geometry."""

    voter: NameVoter
    first_offset: float
    last_embedded: int = -(10**9)  # processed-frame number of the latest embedding
    announced: str | None = None  # name given in the latest appeared/renamed event (None: not announced)
    captured: float = 0.0  # perf_counter when the frame that started the track was captured
    named_at: float | None = None  # perf_counter when it first had a name
    recent: deque = field(default_factory=lambda: deque(maxlen=4))  # its latest unit embeddings


class LiveIdentifier:
    """Tracks and names the faces of successive frames.

    Args:
        recognizer: the :class:`~facegnet.recognizer.FaceRecognizer` (detector and embedder).
        gallery: the :class:`~facegnet.gallery.Gallery` to identify against.
        config: the pipeline's knobs.
        emit: called with each event dict (``appeared``, ``renamed``, ``left``).
    """

    def __init__(self, recognizer: Any, gallery: Any, config: LiveConfig | None = None,
                 emit: Emit | None = None) -> None:
        self.recognizer = recognizer
        self.gallery = gallery
        self.config = config or LiveConfig()
        self.emit = emit or (lambda event: None)
        c = self.config
        self.tracker = Tracker(c.iou_threshold, c.max_misses, c.min_hits, max_predict=3 * c.detect_every)
        self._info: dict[int, _TrackInfo] = {}
        self._processed = 0
        self._last_detection = -(10**9)
        self._last_frame: Frame | None = None
        self._thumbnail: np.ndarray | None = None  # of the latest frame checked for a cut
        self._checked: int | None = None  # index of that frame
        self._cut = False  # that frame is a cut
        self.detections = 0
        self.embeddings = 0
        self.appearances = 0
        self.cuts = 0  # scene cuts seen
        self.splits = 0  # tracks split because their face changed
        self.visits: list[tuple[str, float]] = []  # (name, seconds) of every face that left
        # (track id, index and capture time of the frame that started it, time it was first named): latencies
        self.namings: list[tuple[int, int, float, float]] = []

    # ------------------------------------------------------------------------------------------- frames
    def process(self, frame: Frame) -> list[Observation]:
        """Detect (when due), track, identify and emit events for one frame; returns the faces to show."""
        self._last_frame = frame
        cut = self.scene_cut(frame)
        if cut or self.detection_due:
            rgb = cv2.cvtColor(frame.image, cv2.COLOR_BGR2RGB)
            faces = self.recognizer.detect(rgb)
            self.detections += 1
            self._last_detection = self._processed
            update = self.tracker.update(faces, frame.index)
            for track in update.ended:
                self._left(track, frame, "gone")
            for track in update.created:
                self._new_info(track, frame)
            tracks = [t for t in update.created + update.matched if t.id in self._info]
            self._identify(rgb, tracks, frame, everyone=cut)
            self._announce(frame)
        else:
            self.tracker.predict(frame.index)
        self._processed += 1
        return self.observations()

    def warm_up(self) -> None:
        """Load the detector and the embedding network now, so the first frames are not spent loading them."""
        self.recognizer.detect(np.zeros((64, 64, 3), np.uint8))
        size = int(getattr(self.recognizer.card, "input_size", 112) or 112)
        self.recognizer.embed_crops(np.zeros((1, size, size, 3), np.uint8))

    @property
    def detection_due(self) -> bool:
        """Will the next frame run detection (and so be slow), a scene cut aside?"""
        return self._processed - self._last_detection >= self.config.detect_every or self.tracker.needs_detection

    def due(self, frame: Frame) -> bool:
        """Will :meth:`process` run detection on this frame (a detection is due, or the scene was cut)?"""
        return self.scene_cut(frame) or self.detection_due

    def scene_cut(self, frame: Frame) -> bool:
        """Did the picture change wholesale since the previous frame checked (decided once per frame)?"""
        if self._checked == frame.index:
            return self._cut
        small = cv2.resize(frame.image, (32, 32), interpolation=cv2.INTER_AREA)
        grey = (small if small.ndim == 2 else cv2.cvtColor(small, cv2.COLOR_BGR2GRAY)).astype(np.float32) / 255.0
        previous, self._thumbnail, self._checked = self._thumbnail, grey, frame.index
        self._cut = previous is not None and float(np.abs(grey - previous).mean()) > self.config.cut_threshold
        self.cuts += int(self._cut)
        return self._cut

    def skip(self, frames: int = 1) -> None:
        """Count frames shown without passing through :meth:`process` (see :class:`BackgroundIdentifier`)."""
        self._processed += frames

    def observations(self) -> list[Observation]:
        """The confirmed tracks as they should be drawn now."""
        out = []
        for track in self.tracker.tracks:
            if not self.tracker.confirmed(track):
                continue
            voter = self._info[track.id].voter
            detected = self._last_frame is not None and track.last_frame == self._last_frame.index
            out.append(Observation(track.id, track.box.copy(), voter.name, voter.similarity, detected,
                                   self._last_frame.index if self._last_frame else -1, track.velocity.copy()))
        return out

    def finish(self) -> None:
        """The source ended: every face still present leaves."""
        frame = self._last_frame
        for track in self.tracker.clear():
            if frame is not None:
                self._left(track, frame, "end")

    # ------------------------------------------------------------------------------------------- helpers
    def _new_info(self, track: Track, frame: Frame) -> _TrackInfo:
        info = _TrackInfo(NameVoter(self.config.vote_window), frame.offset, captured=frame.captured,
                          recent=deque(maxlen=max(1, self.config.recent_embeddings)))
        self._info[track.id] = info
        return info

    @property
    def same_face(self) -> float:
        """Least similarity of a track's new embedding to one of its recent ones for it to be the same face."""
        if self.config.same_face is not None:
            return float(self.config.same_face)
        return float(getattr(getattr(self.recognizer, "card", None), "threshold", 0.3))

    def _identify(self, rgb: np.ndarray, tracks: list[Track], frame: Frame, everyone: bool = False) -> None:
        due = []
        for track in tracks:
            info = self._info[track.id]
            if everyone or len(info.voter) < self.config.min_votes or \
                    self._processed - info.last_embedded >= self.config.embed_every:
                due.append(track)
        if not due:
            return
        embeddings = np.asarray(self.recognizer.embed_faces(rgb, [t.face for t in due]), np.float32)
        self.embeddings += len(due)
        matches = self.gallery.search(embeddings, threshold=self.config.threshold,
                                      aggregate=self.config.aggregate)
        now = time.perf_counter()
        units = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
        for track, match, unit in zip(due, matches, units):
            info = self._info[track.id]
            if info.recent and max(float(unit @ seen) for seen in info.recent) < self.same_face:
                track, info = self._split(track, frame)  # someone else: a new face from here on
            info.recent.append(unit)
            info.voter.add(match.name, match.similarity)
            info.last_embedded = self._processed
            if info.named_at is None:
                info.named_at = now
                self.namings.append((track.id, track.first_frame, info.captured, now))

    def _split(self, track: Track, frame: Frame) -> tuple[Track, _TrackInfo]:
        """The face of ``track`` stopped matching it: it leaves, and a new track continues its box."""
        self._left(track, frame, "changed")
        self.splits += 1
        new = self.tracker.split(track, frame.index)
        return new, self._new_info(new, frame)

    def _announce(self, frame: Frame) -> None:
        for track in self.tracker.tracks:
            info = self._info[track.id]
            name = info.voter.name
            if name is None or not self.tracker.confirmed(track) or name == info.announced:
                continue
            extra = {} if info.announced is None else {"previous": info.announced}
            kind = "appeared" if info.announced is None else "renamed"
            if kind == "appeared":
                self.appearances += 1
            info.announced = name
            self.emit(face_event(kind, track=track.id, name=name, similarity=info.voter.similarity,
                                 box=track.face.box, wall_time=frame.wall_time, frame=frame.index,
                                 offset=frame.offset, **extra))

    def _left(self, track: Track, frame: Frame, reason: str) -> None:
        info = self._info.pop(track.id, None)
        if info is None or info.announced is None:
            return  # never appeared (an unconfirmed, one-off detection)
        seconds = max(0.0, frame.offset - info.first_offset)
        self.visits.append((info.voter.name or info.announced, seconds))
        self.emit(face_event("left", track=track.id, name=info.voter.name, similarity=info.voter.similarity,
                             box=track.face.box, wall_time=frame.wall_time, frame=frame.index,
                             offset=frame.offset, reason=reason, seconds=round(seconds, 3)))


class BackgroundIdentifier:
    """Runs the slow frames of a :class:`LiveIdentifier` (detection, embedding) on a worker thread.

    For live sources: the display loop never waits for a detection. While the worker detects on one frame,
    the frames that follow are shown at once with the faces' boxes moved on by their velocity; the
    worker's answer (tracks, names, events) is taken up by the first frame after it is ready. Frames with
    nothing slow to do run on the caller's thread. The identifier is only ever used by one thread at a time.
    """

    def __init__(self, identifier: LiveIdentifier) -> None:
        self.identifier = identifier
        self._cond = threading.Condition()
        self._job: Frame | None = None
        self._busy = False
        self._done: list[Observation] | None = None
        self._error: BaseException | None = None
        self._closed = False
        self._shown: list[Observation] = []
        self._skipped = 0  # frames shown while the worker was busy
        self._max_steps = identifier.tracker.max_predict
        self._thread = threading.Thread(target=self._work, name="facegnet detection", daemon=True)
        self._thread.start()

    def process(self, frame: Frame) -> list[Observation]:
        """The faces to show on this frame (never waits for a detection)."""
        with self._cond:
            if self._error is not None:
                error, self._error = self._error, None
                raise error
            busy = self._busy
            if not busy and self._done is not None:
                self._shown, self._done = self._done, None
        if busy:
            self._skipped += 1
            return [obs.moved_to(frame.index, self._max_steps) for obs in self._shown]
        self.identifier.skip(self._skipped)
        self._skipped = 0
        if not self.identifier.due(frame):
            self._shown = self.identifier.process(frame)  # cheap: the tracker moves the boxes
            return self._shown
        with self._cond:  # a copy: the caller draws on its frame while the worker reads this one
            self._job, self._busy = replace(frame, image=frame.image.copy()), True
            self._cond.notify_all()
        return [obs.moved_to(frame.index, self._max_steps) for obs in self._shown]

    def _work(self) -> None:
        while True:
            with self._cond:
                while self._job is None and not self._closed:
                    self._cond.wait()
                if self._job is None:
                    return
                frame, self._job = self._job, None
            try:
                result, error = self.identifier.process(frame), None
            except BaseException as exc:  # handed to the caller's thread
                result, error = [], exc
            with self._cond:
                self._done, self._error, self._busy = result, error, False
                self._cond.notify_all()

    def finish(self) -> None:
        """Wait for the frame in progress, stop the worker, and end every track (see LiveIdentifier.finish)."""
        with self._cond:
            while self._busy:
                self._cond.wait(0.1)
            self._closed = True
            self._cond.notify_all()
        self._thread.join()
        self.identifier.finish()
        if self._error is not None:
            error, self._error = self._error, None
            raise error


__all__ = [
    "BackgroundIdentifier",
    "LiveConfig",
    "LiveIdentifier",
    "Recorder",
    "Window",
    "check_window_support",
]
