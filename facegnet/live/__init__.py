"""Live identification from a webcam, a video file or a stream.

- :mod:`~facegnet.live.capture`: frames read on their own thread, newest first (no growing lag);
- :mod:`~facegnet.live.tracker`: IoU tracking between detections;
- :mod:`~facegnet.live.events`: steady names by voting, JSON events, drawing, the summary;
- :mod:`~facegnet.live.session`: the per-frame work that ties them to a recogniser and a gallery;
- :mod:`~facegnet.live.run`: the loop from a capture to a window, a recording and a summary;
- :mod:`~facegnet.live.window`: the window (Tk, or a GUI build of OpenCV) and the video recorder.

    >>> from facegnet import FaceRecognizer, Gallery
    >>> from facegnet.live import FrameCapture, LiveIdentifier, Source, run_live, EventWriter
    >>> rec = FaceRecognizer(threads=1)
    >>> with Gallery("gallery", recognizer=rec) as gallery:
    ...     identifier = LiveIdentifier(rec, gallery, emit=EventWriter())
    ...     summary = run_live(FrameCapture(Source.parse(camera=0)), identifier, window=True)
"""
from facegnet.live.capture import CaptureError, Frame, FrameCapture, Source, open_video_capture
from facegnet.live.events import EventWriter, NameVoter, Observation, Summary, draw, face_event
from facegnet.live.run import run_live
from facegnet.live.session import BackgroundIdentifier, LiveConfig, LiveIdentifier
from facegnet.live.tracker import Track, Tracker, TrackUpdate, iou_matrix
from facegnet.live.window import Recorder, Window

__all__ = [
    "BackgroundIdentifier",
    "CaptureError",
    "EventWriter",
    "Frame",
    "FrameCapture",
    "LiveConfig",
    "LiveIdentifier",
    "NameVoter",
    "Observation",
    "Recorder",
    "Source",
    "Summary",
    "Track",
    "TrackUpdate",
    "Tracker",
    "Window",
    "draw",
    "face_event",
    "iou_matrix",
    "open_video_capture",
    "run_live",
]
