"""``facegnet identify --camera N | --video PATH | --stream URL``: live identification.

The options are added to the ``identify`` sub-command by :func:`add_live_options`; ``identify`` hands the
run to :func:`run_live_cli` when a live source is given. Events go to stdout as JSON lines (see
:mod:`facegnet.live.events`), ending with one ``summary`` line; messages and the summary in words go to stderr.
"""
from __future__ import annotations

import argparse
import sys

from facegnet.cli.common import database_of, print_json, warn
from facegnet.detection.quality import MIN_FACE_SIZE
from facegnet.errors import FacegnetError, GalleryError

LIVE_THREADS = 1  # one torch thread by default: the capture thread and other programs keep a core


def _add(group, *flags: str, **kwargs) -> None:
    """Add an option unless ``identify`` already has it (then the two share it)."""
    try:
        group.add_argument(*flags, **kwargs)
    except argparse.ArgumentError:
        pass


def add_live_options(parser: argparse.ArgumentParser) -> None:
    """The live-source options of ``facegnet identify``."""
    group = parser.add_argument_group(
        "live video (instead of IMAGE files)",
        "Name the faces of a webcam, a video file or a stream. A window shows boxes, names, similarities and "
        "the frame rate (q quits); events go to stdout as JSON lines: appeared, renamed, left, and a summary.")
    group.add_argument("--camera", type=int, metavar="N", help="webcam index (0 is the first camera)")
    group.add_argument("--video", metavar="PATH", help="a video file")
    group.add_argument("--stream", metavar="URL", help="an RTSP or HTTP stream (e.g. rtsp://host:554/live)")
    group.add_argument("--headless", action="store_true",
                       help="no window (servers): only the JSON events on stdout")
    group.add_argument("--record", metavar="OUT.mp4", help="also write the frames with the drawings to a video")
    group.add_argument("--detect-every", type=int, default=5, metavar="N",
                       help="run face detection every N frames, tracking faces in between (default: 5; "
                            "1 detects on every frame)")
    group.add_argument("--embed-every", type=int, default=10, metavar="M",
                       help="re-identify a tracked face every M frames (default: 10)")
    group.add_argument("--realtime", action="store_true",
                       help="play a --video at its own frame rate, skipping frames when slower, as a camera "
                            "would (default: every frame of a video file is processed)")
    group.add_argument("--mqtt", metavar="URL",
                       help="also publish the events to an MQTT broker: mqtt://HOST[:PORT]/TOPIC (events on "
                            "TOPIC/events, each person's presence on TOPIC/people/NAME, Home Assistant discovery; "
                            "options ?discovery=off, ?buffer=SECONDS to wait for an absent broker, default 60; "
                            "password in FACEGNET_MQTT_PASSWORD); see docs/home-automation.md")
    group.add_argument("--retries", type=int, default=5, metavar="N",
                       help="times a dropped stream or camera is reopened before giving up (default: 5)")
    _add(group, "--min-face-size", type=int, default=None, metavar="PX",
         help=f"smallest face side searched for and named, in pixels (default: {MIN_FACE_SIZE}; smaller is slower)")
    _add(group, "--threads", type=int, default=None, metavar="N",
         help=f"CPU threads for torch (live default: {LIVE_THREADS})")


def far_option(parser: argparse.ArgumentParser) -> None:
    """``--far RATE``: the false-alarm rate per search (``identify``, live or photos, and ``gallery info``)."""
    parser.add_argument("--far", type=float, default=None, metavar="RATE",
                        help="false-alarm rate per search the default threshold holds: the chance that a stranger "
                        "is named as somebody (default: 0.01, as the model card's dev pairs predict it); the "
                        "threshold rises with the number of enrolled photos")


def apply_far(gallery, args: argparse.Namespace) -> None:
    """Set the gallery's per-search false-alarm rate from ``--far`` (checked: a rate, not with --threshold)."""
    far = getattr(args, "far", None)
    if far is None:
        return
    if not 0.0 < far < 1.0:
        raise FacegnetError(f"--far must be a rate between 0 and 1 (e.g. 0.01), not {far:g}")
    if getattr(args, "threshold", None) is not None:
        raise FacegnetError("give --far (a false-alarm rate) or --threshold (a similarity), not both")
    gallery.search_far = far


def threshold_line(gallery) -> str:
    """Which threshold names faces, and the false-alarm rate per search it holds (one line, for stderr)."""
    return f"facegnet: threshold {gallery.search_threshold().describe()}"


def live_requested(args: argparse.Namespace) -> bool:
    """Did the user give a live source?"""
    return any(getattr(args, key, None) is not None for key in ("camera", "video", "stream"))


def run_live_cli(args: argparse.Namespace) -> int:
    """Run live identification as the options say; returns the exit code."""
    from facegnet.live import FrameCapture, Source
    from facegnet.live.window import check_window_support

    source = Source.parse(args.camera, args.video, args.stream)
    if getattr(args, "images", None):
        raise FacegnetError("give IMAGE files or one of --camera, --video, --stream, not both")
    if getattr(args, "annotate", None):
        raise FacegnetError("--annotate is for photos; to keep the drawings of a video use --record OUT.mp4")
    if args.realtime and source.kind != "video":
        warn("--realtime only changes how video files are read; cameras and streams are always real time")
    if getattr(args, "mqtt", None):  # a bad URL or a missing client library: one line before any model loads
        from facegnet.live.mqtt import MqttTarget, require_client

        args.mqtt_target = MqttTarget.parse(args.mqtt)
        require_client()
    if not args.headless:
        check_window_support()
    capture = FrameCapture(source, pace=args.realtime, retries=args.retries)
    capture.open()  # a camera, file or stream that cannot be opened fails before any model loads
    try:
        return _run(args, capture)
    finally:
        capture.stop()


def _run(args: argparse.Namespace, capture) -> int:
    from facegnet.gallery import Gallery
    from facegnet.live import EventWriter, LiveConfig, LiveIdentifier, run_live
    from facegnet.live.events import EventSinks
    from facegnet.recognizer import FaceRecognizer

    config = LiveConfig(detect_every=args.detect_every, embed_every=args.embed_every,
                        threshold=args.threshold, aggregate=getattr(args, "aggregate", "max"))
    min_face = args.min_face_size or MIN_FACE_SIZE
    recognizer = FaceRecognizer(
        args.weights, threshold=args.threshold, min_face_size=min_face, detect_min_face_size=min_face,
        flip=not args.no_flip, device=args.device, threads=args.threads or LIVE_THREADS,
        **({"backend": args.backend} if getattr(args, "backend", None) else {}),  # if identify offers --backend
    )
    gallery = Gallery(args.gallery, recognizer=recognizer,  # refuses a gallery of other weights
                      database=database_of(args))
    with gallery:
        if not len(gallery):
            raise GalleryError("the gallery is empty: enroll people first", gallery.path)
        if not gallery.card.trained:
            warn("no trained weights are installed: using an untrained network, so names are near chance")
        apply_far(gallery, args)
        print(threshold_line(gallery), file=sys.stderr)
        publisher = None
        if getattr(args, "mqtt_target", None) is not None:
            from facegnet.live.mqtt import MqttPublisher

            publisher = MqttPublisher(args.mqtt_target, people=[name for name, _ in gallery.people()],
                                      source=capture.source.describe())
            publisher.start()
        identifier = LiveIdentifier(recognizer, gallery, config, emit=EventSinks(EventWriter(sys.stdout), publisher))
        try:
            summary = run_live(capture, identifier, window=not args.headless, record=args.record)
        finally:
            if publisher is not None:
                publisher.close()
        in_force = gallery.search_threshold()  # as it stood at the end (people may have been enrolled meanwhile)
    report = summary.to_dict()
    report["threshold"] = in_force.to_dict()
    if publisher is not None:
        report["mqtt"] = publisher.stats()
    print_json(report)
    print(summary.text(), file=sys.stderr)
    if summary.error is not None:
        raise summary.error
    return 0


__all__ = ["add_live_options", "apply_far", "far_option", "live_requested", "run_live_cli", "threshold_line"]
