#!/usr/bin/env python3
"""Do MTCNN's two engines find the same faces? ONNX Runtime vs PyTorch on every STEP-th LFW photo, batched by 16.

    python benchmarks/mtcnn_engines.py 40      # 331 photos; writes benchmarks/results/mtcnn_engines.json
"""
from __future__ import annotations

import glob
import json
import sys
from pathlib import Path

import numpy as np

from facegnet.detection.detector import Detector

HERE = Path(__file__).resolve().parent
LFW = HERE.parent.parent / "shared" / "data" / "lfw" / "images"
paths = sorted(glob.glob(str(LFW / "*" / "*.jpg")))[::int(sys.argv[1]) if len(sys.argv) > 1 else 40]
onnx, torch_ = Detector(engine="onnx"), Detector(engine="torch")
stats = {"photos": len(paths), "faces_onnx": 0, "faces_torch": 0, "photos_with_face_onnx": 0,
         "photos_with_face_torch": 0, "count_mismatch": 0, "max_box_diff_px": 0.0, "max_landmark_diff_px": 0.0,
         "max_score_diff": 0.0}
for i in range(0, len(paths), 16):
    chunk = paths[i:i+16]
    a, b = onnx.detect_batch(chunk), torch_.detect_batch(chunk)
    for fa, fb in zip(a, b):
        stats["faces_onnx"] += len(fa); stats["faces_torch"] += len(fb)
        stats["photos_with_face_onnx"] += bool(fa); stats["photos_with_face_torch"] += bool(fb)
        if len(fa) != len(fb):
            stats["count_mismatch"] += 1; continue
        for x, y in zip(fa, fb):
            stats["max_box_diff_px"] = max(stats["max_box_diff_px"], float(np.abs(x.box - y.box).max()))
            stats["max_landmark_diff_px"] = max(stats["max_landmark_diff_px"], float(np.abs(x.landmarks - y.landmarks).max()))
            stats["max_score_diff"] = max(stats["max_score_diff"], abs(x.score - y.score))
stats["command"] = "python benchmarks/mtcnn_engines.py " + " ".join(sys.argv[1:])
print(json.dumps(stats))
(HERE / "results" / "mtcnn_engines.json").write_text(json.dumps(stats, indent=2) + "\n")
