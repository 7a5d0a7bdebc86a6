#!/usr/bin/env python3
"""End-to-end speed of live identification on 640×480 video; writes benchmarks/results/live_fps.{json,md}.

Synthetic videos are made of LFW photos on a 640×480 canvas, with 1, 3 and 8 faces drifting a few pixels
per frame, and a gallery holding the people shown plus others. For each face count:

- throughput: every frame of a 25 fps MJPG file through the whole pipeline (capture thread, detection,
  tracking, embedding, gallery search, voting, drawing), with tracking (detection every ``--detect-every``
  frames, embeddings only for new tracks and every ``--embed-every`` frames) and without (detection and
  embedding on every frame): frames per second and milliseconds per frame;
- latency: the same pipeline fed like a camera (the file played at 25 fps, stale frames dropped), with the
  faces leaving and coming back every 2 s: frames per second shown, capture-to-name latency of each frame
  (capture of the frame → its boxes and names ready) and of each arriving face (capture of the first frame
  that shows it → its name); with tracking both with detection on a worker thread (the default for cameras
  and streams: the display never waits for a detection) and with detection in the display loop.

    python benchmarks/live_fps.py [--frames 250] [--latency-seconds 8] [--faces 1 3 8] [--threads 1]
    python benchmarks/live_fps.py --frames 20 --latency-seconds 2      # a quick smoke run
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from facegnet.gallery import Gallery
from facegnet.live import FrameCapture, LiveConfig, LiveIdentifier, Source, draw, run_live
from facegnet.recognizer import FaceRecognizer

HERE = Path(__file__).resolve().parent
LFW = HERE.parent.parent / "shared" / "data" / "lfw" / "images"
WIDTH, HEIGHT, FPS = 640, 480, 25.0
LAYOUTS = {1: (1, 1, 300), 3: (3, 1, 210), 8: (4, 2, 160)}  # columns, rows, tile side in pixels
BLINK_ON, BLINK_OFF = 40, 10  # latency videos: frames with the faces, then without
# (name, pipeline, detection on a worker thread): what a camera gets by default, then the same in the loop.
LATENCY_MODES = [
    ("tracking, background detection", "tracking", True),
    ("tracking, detection in the loop", "tracking", False),
    ("no tracking", "no tracking", False),
]


def people(count: int) -> list[Path]:
    """One photo each of ``count`` different LFW people (deterministic)."""
    folders = sorted(p for p in LFW.iterdir() if p.is_dir()) if LFW.is_dir() else []
    if len(folders) < count:
        raise SystemExit(f"LFW photos not found at {LFW}")
    step = len(folders) // count
    return [next(iter(sorted(folders[i * step].glob("*.jpg")))) for i in range(count)]


def tiles(photos: list[Path], faces: int) -> list[tuple[np.ndarray, int, int]]:
    """(tile image BGR, x, y) of each face: the photo's central part, scaled to the layout's tile."""
    cols, rows, side = LAYOUTS[faces]
    x0, y0 = (WIDTH - cols * side) // 2, (HEIGHT - rows * side) // 2
    out = []
    for i, path in enumerate(photos[:faces]):
        image = cv2.imread(str(path))[25:225, 25:225]  # LFW faces sit in the middle of the 250×250 photo
        tile = cv2.resize(image, (side, side), interpolation=cv2.INTER_AREA)
        out.append((tile, x0 + (i % cols) * side, y0 + (i // cols) * side))
    return out


def write_video(path: Path, placed: list[tuple[np.ndarray, int, int]], frames: int, blink: bool) -> None:
    """A 25 fps MJPG video of the tiles drifting on a grey canvas (blinking: 40 frames shown, 10 hidden)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (WIDTH, HEIGHT))
    rng = np.random.default_rng(0)
    background = (110 + 10 * rng.standard_normal((HEIGHT, WIDTH, 3))).clip(0, 255).astype(np.uint8)
    margin = 8
    for k in range(frames):
        canvas = background.copy()
        if not blink or k % (BLINK_ON + BLINK_OFF) < BLINK_ON:
            dx, dy = int(round(margin * np.sin(k / 12.0))), int(round(margin * np.cos(k / 17.0)))
            for tile, x, y in placed:
                h, w = tile.shape[:2]
                tx = min(max(x + dx, 0), WIDTH - w)
                ty = min(max(y + dy, 0), HEIGHT - h)
                canvas[ty : ty + h, tx : tx + w] = tile
        writer.write(canvas)
    writer.release()


def percentile(values, q: float) -> float | None:
    return round(float(np.percentile(values, q)), 1) if len(values) else None


def throughput(recognizer, gallery, video: Path, config: LiveConfig) -> dict:
    """Every frame of the file through the pipeline; frames per second and per-frame processing times."""
    identifier = LiveIdentifier(recognizer, gallery, config)
    times: list[float] = []
    process = identifier.process

    def timed(frame):
        start = time.perf_counter()
        out = process(frame)
        times.append((time.perf_counter() - start) * 1000.0)
        return out

    identifier.process = timed
    stages = {"detect": [], "embed": []}
    detect, embed = recognizer.detect, recognizer.embed_faces

    def timed_stage(name, fn):
        def wrapper(*a, **k):
            start = time.perf_counter()
            out = fn(*a, **k)
            stages[name].append((time.perf_counter() - start) * 1000.0)
            return out
        return wrapper

    recognizer.detect, recognizer.embed_faces = timed_stage("detect", detect), timed_stage("embed", embed)
    try:
        summary = run_live(FrameCapture(Source("video", str(video))), identifier,
                           on_frame=lambda frame, obs: draw(frame.image, obs, 0.0))
    finally:
        del recognizer.detect, recognizer.embed_faces  # back to the class's methods
    return {
        "frames": summary.frames_processed,
        "seconds": round(summary.seconds, 2),
        "fps": round(summary.fps, 1),
        "ms_per_frame_mean": round(statistics.fmean(times), 1),
        "ms_per_frame_p50": percentile(times, 50),
        "ms_per_frame_p95": percentile(times, 95),
        "ms_per_frame_max": percentile(times, 100),
        "detections": summary.detections,
        "embeddings": summary.embeddings,
        "faces_appeared": summary.tracks,
        "detect_ms_mean": round(statistics.fmean(stages["detect"]), 1) if stages["detect"] else None,
        "embed_ms_per_face": round(sum(stages["embed"]) / max(1, summary.embeddings), 1),
    }


def latency(recognizer, gallery, video: Path, config: LiveConfig, frames: int, background: bool) -> dict:
    """The file played like a 25 fps camera: per-frame and arriving-face capture-to-name latency."""
    identifier = LiveIdentifier(recognizer, gallery, config)
    capture = FrameCapture(Source("video", str(video)), pace=True)
    summary = run_live(capture, identifier, background=background,
                       on_frame=lambda frame, obs: draw(frame.image, obs, 0.0))
    arrivals = []
    for k in range(0, frames, BLINK_ON + BLINK_OFF):  # frame k shows the faces again
        shown = capture.started_at + k / FPS  # when a camera would have delivered frame k
        for _, first, _, named in identifier.namings:
            if k <= first < k + BLINK_ON:
                arrivals.append((named - shown) * 1000.0)
    return {
        "frames_read": summary.frames_read,
        "frames_processed": summary.frames_processed,
        "dropped_fraction": round(summary.frames_dropped / max(1, summary.frames_read), 3),
        "fps": round(summary.fps, 1),
        "frame_latency_ms_p50": percentile(summary.latency_ms, 50),
        "frame_latency_ms_p95": percentile(summary.latency_ms, 95),
        "arrivals": len(arrivals),
        "name_latency_ms_p50": percentile(arrivals, 50),
        "name_latency_ms_p95": percentile(arrivals, 95),
        "name_latency_ms_max": percentile(arrivals, 100),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=250, help="frames per throughput run (default: 250)")
    parser.add_argument("--latency-seconds", type=float, default=8.0, help="length of each latency run")
    parser.add_argument("--faces", type=int, nargs="+", default=[1, 3, 8], choices=sorted(LAYOUTS))
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the live default: 1)")
    parser.add_argument("--detect-every", type=int, default=LiveConfig.detect_every)
    parser.add_argument("--embed-every", type=int, default=LiveConfig.embed_every)
    parser.add_argument("--min-face-size", type=int, default=40)
    parser.add_argument("--no-flip", action="store_true", help="skip flip test-time augmentation")
    parser.add_argument("--extra-people", type=int, default=50, help="gallery people besides those shown")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "live_fps")
    args = parser.parse_args()

    recognizer = FaceRecognizer(min_face_size=args.min_face_size, detect_min_face_size=args.min_face_size,
                                flip=not args.no_flip, threads=args.threads)
    modes = {
        "tracking": LiveConfig(detect_every=args.detect_every, embed_every=args.embed_every),
        "no tracking": LiveConfig(detect_every=1, embed_every=1),
    }
    latency_frames = int(args.latency_seconds * FPS)
    photos = people(max(args.faces) + args.extra_people)
    rows, lat_rows = [], []
    with tempfile.TemporaryDirectory(prefix="live_fps_") as tmp:
        tmp = Path(tmp)
        gallery = Gallery(tmp / "gallery", recognizer=recognizer, create=True)
        enrolled = 0
        for path in photos:
            try:
                gallery.enroll(path.parent.name, path)
                enrolled += 1
            except Exception as exc:  # noqa: BLE001 (a photo without a usable face: skip it)
                print(f"skipped {path.name}: {exc}")
        gallery.save()
        warm = tmp / "warm.avi"
        write_video(warm, tiles(photos, 1), 10, blink=False)
        throughput(recognizer, gallery, warm, modes["no tracking"])  # load the networks, warm the caches
        for faces in args.faces:
            placed = tiles(photos, faces)
            video = tmp / f"faces{faces}.avi"
            write_video(video, placed, args.frames, blink=False)
            blink = tmp / f"blink{faces}.avi"
            write_video(blink, placed, latency_frames, blink=True)
            for mode, config in modes.items():
                row = {"faces": faces, "mode": mode, **throughput(recognizer, gallery, video, config)}
                print(json.dumps(row))
                rows.append(row)
            for mode, config, background in LATENCY_MODES:
                lat = {"faces": faces, "mode": mode,
                       **latency(recognizer, gallery, blink, modes[config], latency_frames, background)}
                print(json.dumps(lat))
                lat_rows.append(lat)
        gallery.close()

    meta = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "opencv": cv2.__version__,
        "torch_threads": torch.get_num_threads(),
        "model": recognizer.card.name,
        "trained_weights": recognizer.card.trained,
        "flip_tta": not args.no_flip,
        "min_face_size": args.min_face_size,
        "detect_every": args.detect_every,
        "embed_every": args.embed_every,
        "gallery_people": enrolled,
        "video": f"{WIDTH}x{HEIGHT} MJPG at {FPS:g} fps, LFW faces drifting up to 8 px per axis",
        "frames_per_throughput_run": args.frames,
        "latency_run_seconds": args.latency_seconds,
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{args.out}.json").write_text(json.dumps({"meta": meta, "throughput": rows, "latency": lat_rows},
                                                   indent=2) + "\n")
    Path(f"{args.out}.md").write_text(markdown(meta, rows, lat_rows))
    print(f"wrote {args.out}.json and {args.out}.md")


def markdown(meta: dict, rows: list[dict], lat_rows: list[dict]) -> str:
    lines = [
        "# Live identification speed (640×480)",
        "",
        "Made by `python benchmarks/live_fps.py` on " + meta["machine"] + f", torch {meta['torch']} with "
        f"{meta['torch_threads']} thread(s), model {meta['model']} "
        f"({'trained' if meta['trained_weights'] else 'untrained: speed only'}), flip TTA "
        f"{'on' if meta['flip_tta'] else 'off'}, smallest face {meta['min_face_size']} px, gallery of "
        f"{meta['gallery_people']} people. Tracking: detection every {meta['detect_every']} frames (and at once "
        f"when a face is new or missed), re-identification every {meta['embed_every']} frames; no tracking: "
        "detection and embedding on every frame. Load average at the end: "
        + ", ".join(str(x) for x in meta["load_average_at_end"]) + ".",
        "",
        "## Throughput (every frame of a video file)",
        "",
        "| faces | mode | frames/s | ms/frame mean | p50 | p95 | max | detections | faces embedded | "
        "ms per detection | ms per face embedded |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['faces']} | {r['mode']} | {r['fps']:.1f} | {r['ms_per_frame_mean']:.1f} | "
                     f"{r['ms_per_frame_p50']} | {r['ms_per_frame_p95']} | {r['ms_per_frame_max']} | "
                     f"{r['detections']}/{r['frames']} | {r['embeddings']} | {r['detect_ms_mean']} | "
                     f"{r['embed_ms_per_face']} |")
    lines += [
        "",
        "## Latency (the video played like a 25 fps camera, faces leaving and returning every 2 s)",
        "",
        "Frames/s: frames shown per second (at most the camera's 25). Frame latency: capture of a frame → its "
        "boxes and names ready. Name latency: capture of the first frame showing an arriving face → its name. "
        "Background detection (the default for cameras and streams) runs detection and embedding on a worker "
        "thread and shows every other frame at once with the boxes moved on by their velocity.",
        "",
        "| faces | mode | frames/s | stale frames skipped | frame latency p50 / p95 ms | arrivals | "
        "name latency p50 / p95 / max ms |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in lat_rows:
        lines.append(f"| {r['faces']} | {r['mode']} | {r['fps']:.1f} | {100 * r['dropped_fraction']:.0f}% | "
                     f"{r['frame_latency_ms_p50']} / {r['frame_latency_ms_p95']} | {r['arrivals']} | "
                     f"{r['name_latency_ms_p50']} / {r['name_latency_ms_p95']} / {r['name_latency_ms_max']} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
