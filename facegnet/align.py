"""Alignment: a 5-point similarity transform onto the ArcFace 112×112 template, then a bilinear warp.

The template and the landmark order (image-left eye first) are those of ``../shared/README.md``, which is also
the order facenet-pytorch's MTCNN returns.
"""
from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

#: ArcFace template for a 112×112 crop: image-left eye, image-right eye, nose tip, mouth left, mouth right.
TEMPLATE = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float64,
)
CROP_SIZE = 112


def similarity_transform(source: np.ndarray, target: np.ndarray = TEMPLATE) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) mapping ``source`` onto ``target``.

    Umeyama's closed form (1991), without reflection. Both are (K, 2) point arrays; returns a 2×3 matrix.
    """
    src = np.asarray(source, dtype=np.float64).reshape(-1, 2)
    dst = np.asarray(target, dtype=np.float64).reshape(-1, 2)
    if src.shape != dst.shape or len(src) < 2:
        raise ValueError("need matching point sets of at least two points")
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    covariance = dst_c.T @ src_c / len(src)
    u, singular, vt = np.linalg.svd(covariance)
    sign = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:  # a reflection would fit better: forbid it
        sign[1, 1] = -1.0
    rotation = u @ sign @ vt
    variance = (src_c**2).sum() / len(src)
    if variance <= 0:
        raise ValueError("landmarks are degenerate (all at one point)")
    scale = float(np.trace(np.diag(singular) @ sign)) / variance
    matrix = np.empty((2, 3))
    matrix[:, :2] = scale * rotation
    matrix[:, 2] = dst_mean - matrix[:, :2] @ src_mean
    return matrix


def transform_points(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 2×3 affine matrix to (K, 2) points."""
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    return points @ matrix[:, :2].T + matrix[:, 2]


def align_face(image: np.ndarray, landmarks: np.ndarray, size: int = CROP_SIZE) -> np.ndarray:
    """Warp the face with these five landmarks onto the template: an RGB uint8 (size, size, 3) crop."""
    template = TEMPLATE * (size / CROP_SIZE)
    matrix = similarity_transform(landmarks, template)
    return cv2.warpAffine(
        image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0
    )


def align_faces(image: np.ndarray, landmarks: Sequence[np.ndarray], size: int = CROP_SIZE) -> np.ndarray:
    """Align several faces of one image: (N, size, size, 3) uint8."""
    if len(landmarks) == 0:
        return np.zeros((0, size, size, 3), dtype=np.uint8)
    return np.stack([align_face(image, points, size) for points in landmarks])


def outside_share(shape: Sequence[int], landmarks: np.ndarray, size: int = CROP_SIZE) -> float:
    """The share of a face's aligned crop that lies outside its photo, where the warp fills black.

    ``shape`` is the photo's (height, width, ...). Analytic: each crop pixel is mapped back into the photo and
    rounded to the nearest pixel, as a nearest-neighbour warp of a mask of ones would (no photo-sized work).
    A photo cut close to the face leaves much of its crop black, and that shared fill raises the scores between
    crops cut alike (see :data:`facegnet.detection.quality.TIGHT_CROP`).
    """
    height, width = int(shape[0]), int(shape[1])
    inverse = cv2.invertAffineTransform(similarity_transform(landmarks, TEMPLATE * (size / CROP_SIZE)))
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
    cols = np.floor(inverse[0, 0] * xs + inverse[0, 1] * ys + inverse[0, 2] + 0.5)
    rows = np.floor(inverse[1, 0] * xs + inverse[1, 1] * ys + inverse[1, 2] + 0.5)
    inside = (cols >= 0) & (cols < width) & (rows >= 0) & (rows < height)
    return float(1.0 - inside.mean())


def rounded_share(share: float | None) -> float | None:
    """A share outside the photo as reports carry it: three places, or None when it was not measured."""
    return None if share is None else round(float(share), 3)


def central_landmarks(height: int, width: int, fraction: float = 0.56) -> np.ndarray:
    """Landmarks that align the central square (side ``fraction`` of the shorter side) as if it were a face.

    The fallback for photos known to hold one centred face (benchmarks such as LFW) when MTCNN finds none.
    """
    side = fraction * min(height, width)
    offset = np.array([(width - side) / 2, (height - side) / 2])
    return (TEMPLATE * (side / CROP_SIZE) + offset).astype(np.float32)
