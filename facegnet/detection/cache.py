"""An optional on-disk cache of MTCNN detections for image files (SQLite).

Detection dominates the cost of evaluating a model on a benchmark, and it does not depend on the embedding
weights: caching it lets several models (or back-ends) be compared on the same photos without detecting
them again. Entries are keyed by the file's resolved path, size and modification time plus the detector's
settings, so an edited photo or a changed setting is detected afresh.
"""
from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from facegnet.detection.detector import Detector, Face


def detector_signature(detector: Detector) -> str:
    """The settings that change what MTCNN returns."""
    return json.dumps([detector.min_face_size, detector.thresholds, detector.factor, detector.max_side])


class DetectionCache:
    """Faces per image file, for one detector configuration."""

    def __init__(self, path: str | Path, detector: Detector) -> None:
        self.path = Path(path).expanduser()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._signature = detector_signature(detector)
        self._db = sqlite3.connect(self.path, timeout=30)
        self._db.execute("CREATE TABLE IF NOT EXISTS faces (key TEXT PRIMARY KEY, faces TEXT NOT NULL)")
        os.chmod(self.path, 0o600)  # face positions of a user's photos are personal data too

    def key(self, source) -> str | None:
        """The cache key of a file path (None for in-memory images, which are not cached)."""
        if not isinstance(source, (str, os.PathLike)):
            return None
        try:
            stat = os.stat(source)
        except OSError:
            return None
        return json.dumps([str(Path(source).resolve()), stat.st_size, stat.st_mtime_ns, self._signature])

    def get_many(self, keys: Iterable[str]) -> dict[str, list[Face]]:
        keys = [k for k in keys if k is not None]
        found: dict[str, list[Face]] = {}
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for key, text in self._db.execute(f"SELECT key, faces FROM faces WHERE key IN ({marks})", chunk):
                found[key] = [
                    Face(np.array(b, np.float32), float(s), np.array(lm, np.float32).reshape(5, 2))
                    for b, s, lm in json.loads(text)
                ]
        return found

    def put_many(self, items: Iterable[tuple[str, list[Face]]]) -> None:
        rows = [
            (key, json.dumps([[f.box.tolist(), f.score, f.landmarks.ravel().tolist()] for f in faces]))
            for key, faces in items
            if key is not None
        ]
        with self._db:
            self._db.executemany("INSERT OR REPLACE INTO faces VALUES (?, ?)", rows)

    def close(self) -> None:
        self._db.close()
