#!/usr/bin/env python3
"""How wide facegnet's MTCNN frames a face against dlib's HOG frontal detector, on the same LFW photos; writes
benchmarks/results/box_width_ratio.{json,md}.

The face_recognition compatibility layer (facegnet/compat/face_recognition.py, ``MTCNN_WIDTH_PER_DLIB_WIDTH``)
turns dlib's upsampling floors (80, 40, 20 px) into MTCNN's by this ratio. ``--photos`` LFW photos, spread evenly
over the sorted list of all of them, go through dlib's ``get_frontal_face_detector()`` upsampled once
(face_recognition's default) and through facegnet's MTCNN (``FaceRecognizer().detect``, faces from 20 px). One
face per photo: dlib's box nearest the centre (LFW centres the labelled person), and MTCNN's box overlapping it
most (IoU at least 0.3). The ratio is MTCNN's box width (x2 − x1) over dlib's (``rect.width()``, right − left + 1:
its 80-pixel window is 80 wide). dlib is the ``peers`` extra's ``dlib-bin`` wheel.

    python benchmarks/box_width_ratio.py [--data ../shared/data/lfw] [--photos 200]
"""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import numpy as np
from host_info import run_line, run_record, write_result

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two x1, y1, x2, y2 boxes."""
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "lfw"), help="LFW folder")
    parser.add_argument("--photos", type=int, default=200, help="LFW photos to measure (default: 200)")
    parser.add_argument("--out", default=str(HERE / "results" / "box_width_ratio"))
    args = parser.parse_args()
    try:
        import dlib
    except ImportError:
        print("box_width_ratio: dlib is missing: pip install -e '.[peers]' (the dlib-bin wheel)", file=sys.stderr)
        return 2
    import torch

    from facegnet.compat.face_recognition import MTCNN_WIDTH_PER_DLIB_WIDTH
    from facegnet.io import load_image
    from facegnet.recognizer import FaceRecognizer

    torch.set_num_threads(1)  # a fair share of a shared machine; the ratio does not depend on speed
    everything = sorted((Path(args.data) / "images").glob("*/*.jpg"))
    if not everything:
        print(f"box_width_ratio: no LFW photos under {args.data}/images", file=sys.stderr)
        return 2
    step = max(1, len(everything) // args.photos)
    photos = everything[::step][:args.photos]
    hog = dlib.get_frontal_face_detector()
    recognizer = FaceRecognizer()
    ratios, rows, unmatched, no_dlib = [], [], 0, 0
    for path in photos:
        rgb = load_image(path)
        height, width = rgb.shape[:2]
        found = hog(rgb, 1)
        if not len(found):
            no_dlib += 1
            continue
        rect = min(found, key=lambda r: ((r.left() + r.right()) / 2 - width / 2) ** 2
                   + ((r.top() + r.bottom()) / 2 - height / 2) ** 2)
        dlib_box = np.array([rect.left(), rect.top(), rect.right() + 1, rect.bottom() + 1], float)
        faces = recognizer.detect(rgb, min_face_size=20)
        overlaps = [iou(np.asarray(f.box, float), dlib_box) for f in faces]
        if not overlaps or max(overlaps) < 0.3:
            unmatched += 1
            continue
        face = faces[int(np.argmax(overlaps))]
        mtcnn_width = float(face.box[2] - face.box[0])
        ratios.append(mtcnn_width / rect.width())
        rows.append({"photo": path.relative_to(Path(args.data)).as_posix(), "dlib_width": rect.width(),
                     "mtcnn_width": round(mtcnn_width, 2), "iou": round(max(overlaps), 3)})
    if not ratios:
        print("box_width_ratio: no photo had a face both detectors found", file=sys.stderr)
        return 1
    q1, median, q3 = (float(v) for v in np.percentile(ratios, [25, 50, 75]))
    command = "python benchmarks/box_width_ratio.py " + shlex.join(sys.argv[1:])
    result = {
        **run_record(command.strip()),
        "dlib": dlib.__version__, "dlib_upsample": 1, "photos": len(photos), "matched": len(ratios),
        "dlib_found_none": no_dlib, "no_overlapping_mtcnn_box": unmatched,
        "ratio_median": round(median, 4), "ratio_q1": round(q1, 4), "ratio_q3": round(q3, 4),
        "ratio_mean": round(float(np.mean(ratios)), 4),
        "dlib_width_median": float(np.median([r["dlib_width"] for r in rows])),
        "constant_in_use": MTCNN_WIDTH_PER_DLIB_WIDTH, "faces": rows,
    }
    differs = abs(median - MTCNN_WIDTH_PER_DLIB_WIDTH) > 0.01
    lines = [
        "# MTCNN's box width over dlib HOG's, same LFW faces",
        "",
        run_line(result),
        "",
        "| photos | matched | median | Q1 | Q3 | mean | dlib box width, median px |",
        "|---:|---:|---:|---:|---:|---:|---:|",
        f"| {len(photos)} | {len(ratios)} | {median:.3f} | {q1:.3f} | {q3:.3f} | {result['ratio_mean']:.3f} | "
        f"{result['dlib_width_median']:.0f} |",
        "",
        f"dlib {dlib.__version__} (`get_frontal_face_detector`, upsampled once) found no face in {no_dlib} of the "
        f"{len(photos)} photos and MTCNN no box overlapping dlib's (IoU ≥ 0.3) in {unmatched}. On the other "
        f"{len(ratios)}, MTCNN's box is {median:.3f} as wide as dlib's (median; half of them between {q1:.3f} "
        f"and {q3:.3f}). The face_recognition layer's MTCNN_WIDTH_PER_DLIB_WIDTH is {MTCNN_WIDTH_PER_DLIB_WIDTH}: "
        + (f"{abs(median - MTCNN_WIDTH_PER_DLIB_WIDTH):.3f} from this median, more than 0.01."
           if differs else f"within 0.01 of this median ({abs(median - MTCNN_WIDTH_PER_DLIB_WIDTH):.3f})."),
        "",
    ]
    write_result(Path(args.out), result, lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
