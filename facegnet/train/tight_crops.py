"""Detect and align faces that arrive as tight, small crops (IMFDB's movie frames: 13–600 px, the face filling it).

MTCNN needs context around a face and a face of some size: on a tight crop its proposals fall off the edge and
a 30 px face is below what it searches cheaply. Each crop is therefore padded by ``margin`` of its longer side
on every side (edge pixels repeated: a black frame loses more faces) into a square, and resized to a fixed
``side``; every canvas has the same size, so MTCNN runs them as batches. The landmarks are mapped back to the
crop's own pixels and the face aligned from the crop itself (black border, like every other crop), so the
upscaling adds no second resampling. A crop where no face is found is lost, and counted.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from facegnet.align import align_face
from facegnet.detection.detector import Detector, Face

MARGIN = 0.2
SIDE = 160
MIN_FACE = 40  # in canvas pixels: the face fills about 1 / (1 + 2 × margin) of the canvas


@dataclass(frozen=True)
class Canvas:
    """A padded, resized copy of a crop and how to map its pixels back: ``crop = canvas / scale - offset``."""

    image: np.ndarray
    scale: float
    offset: tuple[float, float]  # (x, y) padding added before the resize, in crop pixels

    def to_crop(self, face: Face) -> Face:
        """``face`` in the crop's own pixel coordinates."""
        shift = np.array(self.offset, np.float32)
        box = face.box.reshape(2, 2) / self.scale - shift
        return Face(box.reshape(4).astype(np.float32), face.score,
                    (face.landmarks / self.scale - shift).astype(np.float32))


def pad_and_upscale(crop: np.ndarray, margin: float = MARGIN, side: int = SIDE) -> Canvas:
    """Pad ``crop`` (H, W, 3) to a square with ``margin`` × its longer side on every side, then resize to
    ``side`` × ``side`` (bicubic up, area down)."""
    h, w = crop.shape[:2]
    pad = round(margin * max(h, w))
    square = max(h, w) + 2 * pad
    top, left = (square - h) // 2, (square - w) // 2
    padded = cv2.copyMakeBorder(crop, top, square - h - top, left, square - w - left, cv2.BORDER_REPLICATE)
    interpolation = cv2.INTER_CUBIC if side > square else cv2.INTER_AREA
    return Canvas(cv2.resize(padded, (side, side), interpolation=interpolation), side / square,
                  (float(left), float(top)))


def tight_crop_detector(threads: int | None = None) -> Detector:
    """The MTCNN settings for canvases of :func:`pad_and_upscale`."""
    return Detector(min_face_size=MIN_FACE, threads=threads)


def detect_tight(detector: Detector, crops: list[np.ndarray], margin: float = MARGIN,
                 side: int = SIDE) -> list[Face | None]:
    """The face of each tight crop in its own pixels (the largest area × score, as the training pack chose),
    or None where MTCNN finds none on the padded, upscaled canvas."""
    canvases = [pad_and_upscale(c, margin, side) for c in crops]
    found = detector.detect_batch([c.image for c in canvases])
    return [canvas.to_crop(max(faces, key=lambda f: f.area * f.score)) if faces else None
            for canvas, faces in zip(canvases, found)]


def align_tight(crop: np.ndarray, face: Face) -> np.ndarray:
    """The 112×112 template-aligned face of a tight crop (black where the template reaches past the crop)."""
    return align_face(crop, face.landmarks)
