#!/usr/bin/env python3
"""CPU speed of each pipeline stage; writes benchmarks/results/pipeline_speed.{json,md}.

- detection: ms per 250×250 LFW photo and per 640×480 frame (an LFW photo on a 640×480 canvas), one image
  per call and in batches of 16;
- alignment: ms per face;
- embedding: faces per second at batch 1 and batch 64 for every GhostNet face variant (flip TTA off and on).

    python benchmarks/pipeline_speed.py [--threads N] [--repeats R]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from facegnet.align import align_face
from facegnet.card import untrained_card
from facegnet.detection.detector import Detector
from facegnet.embed import Embedder
from facegnet.io import load_image
from facegnet.models import FACE_VARIANTS, GhostFaceNet, count_macs, count_parameters

HERE = Path(__file__).resolve().parent
LFW = HERE.parent.parent / "shared" / "data" / "lfw" / "images"


def sample_photos(count: int) -> list[np.ndarray]:
    """LFW photos if ../shared is there, else the package's own samples."""
    paths = sorted(LFW.glob("*/*_0001.jpg"))[:: 40][:count] if LFW.is_dir() else []
    if not paths:
        import facegnet

        paths = sorted((Path(facegnet.__file__).parent / "assets").glob("*.jpg"))
    return [load_image(p) for p in paths]


def timed(fn, repeats: int) -> list[float]:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "pipeline_speed")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    photos = sample_photos(32)
    frames = []
    for photo in photos:
        canvas = np.full((480, 640, 3), 90, dtype=np.uint8)
        canvas[115:365, 195:445] = photo
        frames.append(canvas)
    detector = Detector()
    results: dict = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{args.threads} threads",
        "date": time.strftime("%Y-%m-%d"),
    }

    detection = {}
    for name, images in (("250x250", photos), ("640x480", frames)):
        per_image = [t / len(images) for t in timed(lambda: [detector.detect(im) for im in images], args.repeats)]
        batched = [t / len(images) for t in timed(lambda: detector.detect_batch(images), args.repeats)]
        detection[name] = {"ms_per_image": round(1000 * statistics.median(per_image), 2),
                           "ms_per_image_batch16": round(1000 * statistics.median(batched), 2)}
    results["detection"] = detection

    faces = [(photo, detector.detect(photo)) for photo in photos]
    landmarks = [(photo, f[0].landmarks) for photo, f in faces if f]
    align_times = timed(lambda: [align_face(p, lm) for p, lm in landmarks], args.repeats * 4)
    results["alignment_ms_per_face"] = round(1000 * statistics.median(align_times) / len(landmarks), 3)
    crops = np.stack([align_face(p, lm) for p, lm in landmarks])

    embedding = {}
    for variant, config in FACE_VARIANTS.items():
        card = untrained_card()
        card.config = dict(config)
        row = {"params_M": round(count_parameters(GhostFaceNet(**config)) / 1e6, 3),
               "MMACs": round(count_macs(GhostFaceNet(**config), 112) / 1e6, 1)}
        for flip in (False, True):
            embedder = Embedder(card, flip=flip, batch_size=64)
            batch64 = np.concatenate([crops, crops])[:64]
            one = timed(lambda: [embedder(crops[i : i + 1]) for i in range(16)], args.repeats)
            many = timed(lambda: embedder(batch64), args.repeats)
            suffix = "_flip" if flip else ""
            row[f"faces_per_s_batch1{suffix}"] = round(16 / statistics.median(one), 1)
            row[f"faces_per_s_batch64{suffix}"] = round(64 / statistics.median(many), 1)
        embedding[variant] = row
    results["embedding"] = embedding

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    lines = [f"# Pipeline speed ({results['machine']}, {results['date']})", "",
             "| stage | per call | batched |", "|---|---|---|"]
    for name, row in detection.items():
        lines.append(f"| MTCNN detection, {name} | {row['ms_per_image']} ms/image | "
                     f"{row['ms_per_image_batch16']} ms/image (batch 16) |")
    lines.append(f"| alignment | {results['alignment_ms_per_face']} ms/face | |")
    lines += ["", "| variant | params (M) | MMACs | faces/s b1 | faces/s b64 | faces/s b1 flip | faces/s b64 flip |",
              "|---|---|---|---|---|---|---|"]
    for variant, row in embedding.items():
        lines.append(f"| {variant} | {row['params_M']} | {row['MMACs']} | {row['faces_per_s_batch1']} | "
                     f"{row['faces_per_s_batch64']} | {row['faces_per_s_batch1_flip']} | "
                     f"{row['faces_per_s_batch64_flip']} |")
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
