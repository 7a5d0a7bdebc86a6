#!/usr/bin/env python3
"""How verification's sideways-photo rule (``facegnet.detection.quality.on_its_side``) fares on LFW; writes
benchmarks/results/sideways_photos.{json,md}.

MTCNN finds a false face in some photos turned 90° (no EXIF orientation tag), and verification would compare
it. Two counts, with the shipped detector settings:

- **Turned photos** (``--turned`` of them, drawn with a fixed seed, each turned 90° one way at random): how many
  hold no face of 40 px (already "no face found"), how many a false face the rule refuses, how many one it
  lets through.
- **Upright photos** (every LFW photo): how many have a largest face scoring under ``SIDEWAYS_CHECK`` (looked at
  turned) and how many of those the rule refuses, which it should never do. ``--detection-cache`` (the SQLite
  file ``facegnet eval lfw --detection-cache`` writes) spares detecting them again.

    python benchmarks/sideways_photos.py [--data ../shared/data/lfw] [--turned 400] \
        [--detection-cache runs/lfw_detections.sqlite]
"""
from __future__ import annotations

import argparse
import random
import shlex
import sys
from pathlib import Path

import numpy as np
from host_info import run_line, run_record, write_result

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "lfw"), help="LFW folder")
    parser.add_argument("--turned", type=int, default=400, help="LFW photos to turn 90° (default: 400)")
    parser.add_argument("--detection-cache", metavar="SQLITE", help="detections of the upright photos")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(HERE / "results" / "sideways_photos"))
    args = parser.parse_args()
    photos = sorted((Path(args.data) / "images").glob("*/*.jpg"))
    if not photos:
        print(f"sideways_photos: no LFW photos under {args.data}/images", file=sys.stderr)
        return 2

    from facegnet.detection.quality import MIN_FACE_SIZE, SIDEWAYS_CHECK, SIDEWAYS_FACE, on_its_side
    from facegnet.io import load_image
    from facegnet.recognizer import FaceRecognizer

    detector = FaceRecognizer().detector

    def usable(faces):
        return [f for f in faces if f.size >= MIN_FACE_SIZE]

    # Upright: the largest usable face of every photo; the doubtful ones are looked at turned.
    cached: dict = {}
    cache = None
    if args.detection_cache:
        from facegnet.detection.cache import DetectionCache

        cache = DetectionCache(args.detection_cache, detector)
        cached = cache.get_many(cache.key(p) for p in photos)
    doubtful, refused = [], []
    for path in photos:
        key = cache.key(path) if cache else None
        array = None
        if key in cached:
            faces = cached[key]
        else:
            array = load_image(path)
            faces = detector.detect(array)
            if cache:
                cache.put_many([(key, faces)])
        faces = sorted(usable(faces), key=lambda f: -f.size)
        if not faces or faces[0].score >= SIDEWAYS_CHECK:
            continue
        doubtful.append(path)
        array = load_image(path) if array is None else array
        if (why := on_its_side(array, faces[0], detector.detect)) is not None:
            refused.append(f"{path.relative_to(args.data)}: {why}")

    # Turned: a seeded draw, each photo turned one way or the other.
    draw = random.Random(args.seed)
    counts = {"no_face": 0, "refused": 0, "let_through": 0}
    through = []
    for path in draw.sample(photos, min(args.turned, len(photos))):
        array = np.ascontiguousarray(np.rot90(load_image(path), draw.choice((1, 3))))
        faces = usable(detector.detect(array))
        if not faces:
            counts["no_face"] += 1
        elif on_its_side(array, faces[0], detector.detect) is not None:
            counts["refused"] += 1
        else:
            counts["let_through"] += 1
            through.append(f"{path.relative_to(args.data)} (largest face scores {faces[0].score:.3f})")

    result = {**run_record("python benchmarks/sideways_photos.py " + shlex.join(sys.argv[1:])),
              "check_below": SIDEWAYS_CHECK, "turned_face_at_least": SIDEWAYS_FACE,
              "upright": {"photos": len(photos), "doubtful": len(doubtful), "refused": refused},
              "turned": {"photos": sum(counts.values()), **counts, "let_through_photos": through}}
    lines = [
        "# Photos on their side: verification's rule on LFW", "",
        f"A photo's largest face scoring under {SIDEWAYS_CHECK} is looked at turned 90° each way; it is refused as "
        f"lying on its side when turned it holds a face (≥ {MIN_FACE_SIZE} px) scoring at least {SIDEWAYS_FACE}.",
        "",
        "| photos | count | no face | refused | compared |",
        "|---|---|---|---|---|",
        f"| LFW turned 90° (seed {args.seed}) | {sum(counts.values())} | {counts['no_face']} | {counts['refused']} "
        f"| {counts['let_through']} |",
        f"| LFW upright, largest face under {SIDEWAYS_CHECK} | {len(doubtful)} of {len(photos)} | — | {len(refused)} "
        f"| {len(doubtful) - len(refused)} |",
        "",
        "Turned photos compared all the same: " + ("; ".join(through) or "none") + ".",
        "Upright photos refused: " + ("; ".join(refused) or "none") + ".",
        "",
        run_line(result), "",
    ]
    write_result(Path(args.out), result, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
