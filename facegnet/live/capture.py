"""Frames from a camera, a video file or a network stream, read on their own thread.

:class:`FrameCapture` reads frames in a background thread and keeps only the newest one: a consumer that is
slower than the source skips the stale frames instead of falling further and further behind (no growing
lag). A video file can instead be read frame by frame (nothing dropped, for analysing a recording) or
played at its own frame rate like a camera (``pace=True``). A stream or camera that stops delivering frames
is reopened a few times, with a message on stderr each time, before giving up with a :class:`CaptureError`.
The end of a video file ends the capture cleanly.

    >>> with FrameCapture(Source.parse(video="clip.mp4")) as capture:
    ...     while (frame := capture.read()) is not None:
    ...         process(frame.image)      # BGR uint8, as OpenCV gives it
"""
from __future__ import annotations

import os
import re
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from facegnet.errors import CaptureError, FacegnetError

# FFmpeg prints its own connection errors on stderr; we print one clear line instead. Read when OpenCV's
# FFmpeg backend first starts, so it must be set before any capture opens (a user's own setting wins).
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")

import cv2  # noqa: E402

SOURCE_KINDS = ("camera", "video", "stream")
STREAM_SCHEMES = ("rtsp", "rtsps", "rtmp", "http", "https", "udp", "tcp", "srt")


@dataclass(frozen=True)
class Source:
    """Where frames come from: a camera index, a video file or a stream URL."""

    kind: str  # "camera", "video" or "stream"
    target: int | str

    @classmethod
    def parse(cls, camera: int | None = None, video: str | os.PathLike | None = None,
              stream: str | None = None) -> "Source":
        """The one source given (exactly one of ``camera``, ``video``, ``stream``)."""
        given = [(k, v) for k, v in (("camera", camera), ("video", video), ("stream", stream)) if v is not None]
        if len(given) != 1:
            raise CaptureError("give exactly one of a camera index, a video file or a stream URL")
        kind, target = given[0]
        if kind == "camera":
            if int(target) < 0:
                raise CaptureError(f"camera index must be 0 or more, not {target}")
            return cls("camera", int(target))
        if kind == "stream" and "://" not in str(target):
            raise CaptureError(f"not a stream URL (expected e.g. rtsp://host/path or http://host/video): {target}")
        return cls(kind, str(target))

    @property
    def live(self) -> bool:
        """Cameras and streams run in real time; a video file can be read at any speed."""
        return self.kind != "video"

    def describe(self) -> str:
        """How messages name the source (a stream's password is masked)."""
        if self.kind == "camera":
            return f"camera {self.target}"
        if self.kind == "stream":
            return f"stream {_mask_password(str(self.target))}"
        return str(self.target)


def _mask_password(url: str) -> str:
    return re.sub(r"(://[^:/@]+):[^@/]*@", r"\1:***@", url)


@dataclass
class Frame:
    """One frame and when it was captured."""

    image: np.ndarray  # H×W×3 uint8, BGR (OpenCV's order)
    index: int  # frame number since the capture started (0, 1, 2, …; skipped frames keep their numbers)
    captured: float  # time.perf_counter() when the frame was read: latencies are measured from here
    wall_time: float  # time.time() at the same moment
    offset: float  # seconds into the source: the video position for files, time since start otherwise


def open_video_capture(source: Source, timeout_s: float = 10.0) -> Any:
    """An opened ``cv2.VideoCapture`` for this source; raises :class:`CaptureError` if it cannot be opened."""
    previous = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)  # our message replaces OpenCV's warnings
    try:
        if source.kind == "camera":
            capture = cv2.VideoCapture(int(source.target))
            if capture.isOpened():
                capture.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # where supported: fewer queued (stale) frames
        elif source.kind == "video":
            path = Path(source.target)
            if not path.exists():
                raise CaptureError("no such video file", path)
            if not path.is_file():
                raise CaptureError("not a file", path)
            capture = cv2.VideoCapture(str(path))
        else:
            ms = int(timeout_s * 1000)
            params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms]
            capture = cv2.VideoCapture(str(source.target), cv2.CAP_FFMPEG, params)
    finally:
        cv2.utils.logging.setLogLevel(previous)
    if not capture.isOpened():
        capture.release()
        reason = {
            "camera": "cannot be opened (is it connected, and not in use by another program?)",
            "video": "cannot be opened as a video (unsupported or damaged file)",
            "stream": f"cannot be opened (unreachable, wrong URL, or no answer within {timeout_s:g} s)",
        }[source.kind]
        raise CaptureError(reason, source.describe())
    return capture


def _warn(message: str) -> None:
    print(f"facegnet: warning: {message}", file=sys.stderr, flush=True)


class FrameCapture:
    """Reads a source on a background thread and hands the consumer the newest frame.

    Args:
        source: what to read (:meth:`Source.parse`).
        drop_stale: keep only the newest frame, dropping those the consumer was too slow to take. Default:
            True for cameras and streams (no growing lag), False for video files (every frame is read).
        pace: play a video file at its own frame rate, as a camera would deliver it (for demos and latency
            measurements; implies ``drop_stale`` unless it is given).
        retries: times a camera or stream that stops delivering frames is reopened before giving up.
        retry_delay: seconds before the first reopening; doubled each time, at most 30 s.
        timeout_s: how long a stream may take to open or to deliver a frame.
        opener: ``opener(source)`` returning an opened ``cv2.VideoCapture``-like object (tests pass fakes).
        log: where warnings about dropped streams go (default: one line on stderr).
    """

    def __init__(
        self,
        source: Source,
        *,
        drop_stale: bool | None = None,
        pace: bool = False,
        retries: int = 5,
        retry_delay: float = 1.0,
        timeout_s: float = 10.0,
        opener: Callable[[Source], Any] | None = None,
        log: Callable[[str], None] = _warn,
    ) -> None:
        self.source = source
        self.pace = bool(pace) and source.kind == "video"
        self.drop_stale = (source.live or self.pace) if drop_stale is None else bool(drop_stale)
        self.retries = max(0, int(retries))
        self.retry_delay = max(0.0, float(retry_delay))
        self.timeout_s = float(timeout_s)
        self._opener = opener or (lambda s: open_video_capture(s, self.timeout_s))
        self._log = log
        self._capture: Any = None
        self._thread: threading.Thread | None = None
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._slot: Frame | None = None
        self._ended = False
        self._error: BaseException | None = None
        self.fps: float | None = None  # the source's frame rate, when it states a plausible one
        self.frame_size: tuple[int, int] | None = None  # (width, height) as the source states it
        # Counters (read them after the capture ended, or loosely while it runs).
        self.frames_read = 0
        self.frames_delivered = 0
        self.frames_dropped = 0
        self.reconnects = 0
        self.ended_by_eof = False
        self.started_at: float | None = None  # perf_counter when reading began (paced frame k is due k/fps later)

    # ------------------------------------------------------------------------------------------- lifecycle
    def open(self) -> "FrameCapture":
        """Open the source without reading yet; raises :class:`CaptureError` if it cannot be opened."""
        if self._capture is not None:
            return self
        self._capture = self._opener(self.source)
        fps = float(self._capture.get(cv2.CAP_PROP_FPS) or 0.0)
        self.fps = fps if 1.0 <= fps <= 240.0 else None
        width = int(self._capture.get(cv2.CAP_PROP_FRAME_WIDTH) or 0)
        height = int(self._capture.get(cv2.CAP_PROP_FRAME_HEIGHT) or 0)
        self.frame_size = (width, height) if width > 0 and height > 0 else None
        return self

    def start(self) -> "FrameCapture":
        """Open the source (if :meth:`open` was not called) and start reading on the background thread."""
        if self._thread is not None:
            return self
        self.open()
        self._thread = threading.Thread(target=self._run, name=f"capture {self.source.describe()}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop reading and release the source (safe to call more than once)."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is None:  # opened but never started: release here
            if self._capture is not None:
                self._capture.release()
            self._ended = True
        elif self._thread is not threading.current_thread():
            self._thread.join(timeout=self.timeout_s + 5.0)

    def __enter__(self) -> "FrameCapture":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def ended(self) -> bool:
        """True once no further frame will come (end of file, an error, or :meth:`stop`)."""
        with self._cond:
            return self._ended and self._slot is None

    # ------------------------------------------------------------------------------------------- consumer
    def read(self, timeout: float | None = None) -> Frame | None:
        """The newest frame not yet read; waits for one.

        Returns None at the end of the source (or after ``timeout`` seconds without a frame). Raises the
        capture's :class:`CaptureError` (a dropped stream that could not be reopened) once the frames read
        before it have been handed out.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._slot is None and not self._ended:
                wait = 0.1 if deadline is None else min(0.1, deadline - time.monotonic())
                if wait <= 0:
                    return None
                self._cond.wait(wait)  # short waits: Ctrl-C is handled promptly
            if self._slot is None:
                if self._error is not None:
                    error, self._error = self._error, None
                    raise error
                return None
            frame, self._slot = self._slot, None
            self.frames_delivered += 1
            self._cond.notify_all()  # a producer waiting for the slot (drop_stale=False) may go on
            return frame

    # ------------------------------------------------------------------------------------------- producer
    def _run(self) -> None:
        start = self.started_at = time.perf_counter()
        try:
            while not self._stop.is_set():
                if self.pace and self.fps:
                    due = start + self.frames_read / self.fps
                    if (delay := due - time.perf_counter()) > 0:
                        self._stop.wait(delay)
                ok, image = self._capture.read()
                if not ok or image is None:
                    if self._stop.is_set():
                        break
                    if self.source.kind == "video":
                        if self.frames_read == 0:
                            raise CaptureError("holds no readable video frames", self.source.describe())
                        self.ended_by_eof = True
                        break
                    self._reconnect()
                    continue
                now = time.perf_counter()
                if self.source.kind == "video":
                    offset = float(self._capture.get(cv2.CAP_PROP_POS_MSEC) or 0.0) / 1000.0
                    if offset <= 0.0 and self.fps:
                        offset = self.frames_read / self.fps
                else:
                    offset = now - start
                frame = Frame(image, self.frames_read, now, time.time(), offset)
                self.frames_read += 1
                with self._cond:
                    if not self.drop_stale:
                        while self._slot is not None and not self._stop.is_set():
                            self._cond.wait(0.1)
                    if self._slot is not None:
                        self.frames_dropped += 1  # the consumer never saw it: it is stale now
                    self._slot = frame
                    self._cond.notify_all()
        except BaseException as exc:  # handed to the consumer by read()
            self._error = exc if isinstance(exc, FacegnetError) else CaptureError(
                f"reading failed: {exc}", self.source.describe())
        finally:
            if self._capture is not None:
                self._capture.release()
            with self._cond:
                self._ended = True
                self._cond.notify_all()

    def _reconnect(self) -> None:
        """Reopen a camera or stream that stopped delivering frames, or raise CaptureError."""
        what = self.source.describe()
        self._capture.release()
        delay = self.retry_delay
        for attempt in range(1, self.retries + 1):
            self._log(f"{what}: no frame (connection dropped?); reopening in {delay:g} s "
                      f"(attempt {attempt} of {self.retries})")
            if self._stop.wait(delay):
                return
            try:
                self._capture = self._opener(self.source)
            except CaptureError:
                delay = min(30.0, max(delay * 2, 0.5))
                continue
            self.reconnects += 1
            self._log(f"{what}: reopened")
            return
        raise CaptureError(
            f"stopped delivering frames and could not be reopened "
            f"({self.retries} attempt{'s' if self.retries != 1 else ''})", what)


__all__ = ["CaptureError", "Frame", "FrameCapture", "Source", "SOURCE_KINDS", "open_video_capture"]
