"""The live loop: :func:`run_live` reads a :class:`~facegnet.live.capture.FrameCapture` (in the background for
cameras, streams and paced videos; in the loop for a video file read frame by frame), has a
:class:`~facegnet.live.session.LiveIdentifier` name its faces, draws into a window and/or a video file, and
returns a :class:`~facegnet.live.events.Summary`."""
from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from facegnet.live.capture import CaptureError, Frame, FrameCapture
from facegnet.live.events import Observation, Summary, draw
from facegnet.live.session import BackgroundIdentifier, LiveIdentifier
from facegnet.live.window import Recorder, Window
from facegnet.stopping import sigterm_as_interrupt

__all__ = ["run_live"]


def run_live(
    capture: FrameCapture,
    identifier: LiveIdentifier,
    *,
    window: bool = False,
    record: str | Path | None = None,
    max_frames: int | None = None,
    background: bool | None = None,
    on_frame: Callable[[Frame, list[Observation]], None] | None = None,
) -> Summary:
    """Identify faces in every frame the capture hands out until it ends, the user quits or Ctrl-C.

    Args:
        background: detect on a worker thread (:class:`BackgroundIdentifier`) so that the display keeps the
            source's pace. Default: on for real-time sources (cameras, streams, a paced video), off for a
            video file read frame by frame (where every frame should be analysed the same way).

    Returns the run's :class:`Summary`; a capture that failed for good (a stream that could not be reopened)
    is recorded in ``summary.error`` after every face still present has been reported as ``left``.
    """
    summary = Summary(capture.source.describe())
    display = Window() if window else None  # fails before the camera opens
    recorder = Recorder(record, None) if record else None
    if background is None:
        background = capture.drop_stale
    worker: LiveIdentifier | BackgroundIdentifier = BackgroundIdentifier(identifier) if background else identifier
    restore = sigterm_as_interrupt()  # a service manager's stop ends the loop like Ctrl-C
    start = time.perf_counter()  # again once the models are loaded
    fps: float | None = None
    previous: float | None = None
    interval: float | None = None
    try:
        identifier.warm_up()  # before reading: a camera's first frames would otherwise wait for the models
        capture.start()
        start = time.perf_counter()
        if recorder is not None:
            recorder.fps = capture.fps or 25.0
        while max_frames is None or summary.frames_processed < max_frames:
            try:
                frame = capture.read()
            except CaptureError as exc:
                summary.error = exc
                summary.ended = f"stopped: {exc.reason}"
                break
            if frame is None:
                summary.ended = "end of file" if capture.ended_by_eof else "end of source"
                break
            observations = worker.process(frame)
            now = time.perf_counter()
            summary.latency_ms.append((now - frame.captured) * 1000.0)
            summary.frames_processed += 1
            if previous is not None:  # frame rate as the viewer sees it: smoothed frame interval
                interval = now - previous if interval is None else 0.9 * interval + 0.1 * (now - previous)
                fps = 1.0 / max(interval, 1e-6)
            previous = now
            if display is not None or recorder is not None:
                draw(frame.image, observations, fps)
            if recorder is not None:
                recorder.write(frame.image)
            if on_frame is not None:
                on_frame(frame, observations)
            if display is not None and not display.show(frame.image):
                summary.ended = "closed by the user"
                break
        else:
            summary.ended = f"stopped after {max_frames} frames"
    except KeyboardInterrupt:
        summary.ended = "interrupted"
    finally:
        capture.stop()
        worker.finish()
        if recorder is not None:
            recorder.close()
        if display is not None:
            display.close()
        restore()
    summary.seconds = time.perf_counter() - start
    summary.frames_read = capture.frames_read
    summary.frames_dropped = capture.frames_dropped
    summary.reconnects = capture.reconnects
    summary.detections = identifier.detections
    summary.embeddings = identifier.embeddings
    summary.tracks = identifier.appearances
    summary.name_latency_ms = [(named - captured) * 1000.0 for _, _, captured, named in identifier.namings]
    for name, seconds in identifier.visits:
        summary.add_visit(name, seconds)
    return summary
