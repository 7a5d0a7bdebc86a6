#!/usr/bin/env python3
"""face_recognition (dlib) on LFW's pairs, scored with the same code as ``facegnet eval lfw``.

face_recognition runs in the Python given by ``--peer-python`` (a virtual environment with face_recognition and
dlib; see benchmarks/photo_speed.py for one built from source) as a worker, as its users run it: each distinct image
of the pairs through the HOG detector (upsampled once, its default), the face nearest the image centre (LFW labels
the central person) or, where HOG finds none, a central box of 56% of the shorter side (facegnet's own fallback),
then 5-point landmarks and one jitter (its defaults). The similarity of a pair is minus the Euclidean distance of
the two encodings, so face_recognition's own rule (same person at distance ≤ 0.6) is the threshold −0.6, and the
10-fold accuracy, ROC AUC and TAR at FAR 1e-3 / 1e-2 come from facegnet.evaluation.metrics, as facegnet's do.
Writes benchmarks/results/lfw_peer.{json,md} with the command, the CPU model and the date.

    python benchmarks/lfw_peer.py --peer-python PEER_PYTHON [--data ../shared/data/lfw] [--limit N] [--workers 2]
"""
from __future__ import annotations

import argparse
import datetime
import json
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from facegnet.evaluation.lfw import at_threshold, read_pairs
from facegnet.evaluation.metrics import verification_report
from host_info import cpu_model

#: Runs in the peer's Python: paths (JSON list) on stdin, encodings to argv[1] (.npy), counts as JSON on stdout.
WORKER = r"""
import json, sys
from multiprocessing import Pool
import numpy as np
import face_recognition

def encode(path):
    image = face_recognition.load_image_file(path)
    height, width = image.shape[:2]
    boxes = face_recognition.face_locations(image)  # HOG, upsampled once
    fallback = not boxes
    if boxes:
        centre = lambda b: ((b[0] + b[2]) / 2 - height / 2) ** 2 + ((b[1] + b[3]) / 2 - width / 2) ** 2
        box = min(boxes, key=centre)
    else:
        half = int(0.56 * min(height, width)) // 2
        box = (height // 2 - half, width // 2 + half, height // 2 + half, width // 2 - half)
    encoding = face_recognition.face_encodings(image, [box], num_jitters=1, model="small")[0]
    return encoding, len(boxes), fallback

paths = json.load(sys.stdin)
with Pool(int(sys.argv[2])) as pool:
    done = pool.map(encode, paths, chunksize=16)
np.save(sys.argv[1], np.stack([d[0] for d in done]).astype(np.float32))
json.dump({"without_face": sum(d[2] for d in done), "with_several_faces": sum(d[1] > 1 for d in done),
           "peer": "face_recognition " + getattr(face_recognition, "__version__", "?")}, sys.stdout)
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peer-python", required=True, help="a Python with face_recognition and dlib installed")
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "lfw"), help="LFW's folder")
    parser.add_argument("--limit", type=int, default=None, help="the first N same and different pairs of each fold")
    parser.add_argument("--workers", type=int, default=1, help="peer processes (each one thread)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "lfw_peer"),
                        help="results path without suffix (.json and .md are written)")
    args = parser.parse_args(argv)

    protocol = read_pairs(args.data, limit=args.limit)
    images = protocol.images
    started = time.time()
    with tempfile.TemporaryDirectory() as scratch:
        encodings_file = Path(scratch) / "encodings.npy"
        done = subprocess.run([args.peer_python, "-c", WORKER, str(encodings_file), str(max(1, args.workers))],
                              input=json.dumps([str(p) for p in images]), capture_output=True, text=True, check=False,
                              env={"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
        if done.returncode != 0:
            tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
            print(f"lfw_peer.py: the peer failed ({args.peer_python}): {tail}", file=sys.stderr)
            return 2
        encodings = np.load(encodings_file)
        counts = json.loads(done.stdout)
    seconds = time.time() - started

    index = {path: i for i, path in enumerate(images)}
    a = encodings[[index[p] for p in protocol.a]]
    b = encodings[[index[p] for p in protocol.b]]
    scores = -np.linalg.norm(a - b, axis=1)
    report = verification_report(scores, protocol.same, protocol.folds)
    report.update(at_threshold(scores, protocol.same, -0.6))
    report.update({
        "command": "python benchmarks/lfw_peer.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:])),
        "cpu": cpu_model(), "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "peer": counts["peer"], "images": len(images), "images_without_face": counts["without_face"],
        "images_with_several_faces": counts["with_several_faces"], "seconds": round(seconds, 1),
        "score": "minus the Euclidean distance of the 128-d encodings (threshold -0.6 = face_recognition's rule)",
    })
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    out.with_suffix(".md").write_text("\n".join([
        "# face_recognition on LFW's pairs", "",
        (f"`{report['command']}` — {report['peer']}, {report['cpu']}, {report['date']}; {len(protocol)} pairs, "
         f"{len(images)} images ({counts['without_face']} without a HOG face: central box), {seconds:.0f} s."), "",
        "| 10-fold accuracy | ROC AUC | TAR @ FAR 1e-3 | TAR @ FAR 1e-2 | accuracy at distance 0.6 |",
        "|---|---|---|---|---|",
        (f"| {report['accuracy']:.2%} ± {report['accuracy_std']:.2%} | {report['auc']:.4f} | "
         f"{report['tar@far=0.001']:.2%} | {report['tar@far=0.01']:.2%} | {report['accuracy@card_threshold']:.2%} |"),
        "",
    ]))
    print(f"lfw_peer.py: {report['accuracy']:.2%} ± {report['accuracy_std']:.2%}, TAR {report['tar@far=0.001']:.2%}"
          f" @ FAR 1e-3; {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
