"""MTCNN's three stages in NumPy around the ONNX Runtime networks: the algorithm of facenet-pytorch, faster.

facenet-pytorch's ``detect_face`` resamples every candidate box on its own (one ``interpolate`` call per
crop, dozens per photo) and converts the whole image to a float tensor first; on a CPU at batch 1 that
costs about as much as the three networks. Here one integral image per photo serves every resampling: the
pyramid levels and all R-/O-Net crops come out of it in one vectorised gather each. The resampling is the
same "area" average (PyTorch's adaptive average pooling: window ``[floor(i·n/m), ceil((i+1)·n/m))``) and the
stages, thresholds, regressions and NMS are facenet-pytorch's, so the faces found are the same to float
tolerance (tested against facenet-pytorch's own MTCNN on LFW photos).
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
from torchvision.ops import batched_nms

Network = Callable[[np.ndarray], Sequence[np.ndarray]]

__all__ = ["detect_faces", "area_resample", "integral_images"]


def integral_images(images: np.ndarray) -> np.ndarray:
    """Summed-area tables (N, H+1, W+1, C) of uint8 (N, H, W, C) images: int32, exact up to 8.4 megapixels
    (int64 above)."""
    n, h, w, c = images.shape
    kind = np.int32 if h * w * 255 < 2**31 else np.int64
    table = np.zeros((n, h + 1, w + 1, c), dtype=kind)
    np.cumsum(images, axis=1, dtype=kind, out=table[:, 1:, 1:])
    np.cumsum(table[:, 1:, 1:], axis=2, out=table[:, 1:, 1:])
    return table


def _windows(start: np.ndarray, length: np.ndarray, out: int) -> tuple[np.ndarray, np.ndarray]:
    """Adaptive-pooling windows [lo, hi) of ``out`` cells over ``length`` pixels from ``start`` (per row)."""
    i = np.arange(out)
    lo = start[:, None] + (i[None, :] * length[:, None]) // out
    hi = start[:, None] - ((-(i[None, :] + 1) * length[:, None]) // out)  # ceil division
    return lo, hi


def area_resample(table: np.ndarray, index: np.ndarray, y0: np.ndarray, y1: np.ndarray, x0: np.ndarray,
                  x1: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Area-average the regions ``[y0, y1) × [x0, x1)`` of images ``index`` to (K, C, out_h, out_w) float32.

    Equal to PyTorch's ``interpolate(mode="area")`` of each region (up- or down-sampling): window sums are
    exact integers and, like PyTorch's float32 kernel, divided once by the window's pixel count.
    """
    ry0, ry1 = _windows(y0, y1 - y0, out_h)
    cx0, cx1 = _windows(x0, x1 - x0, out_w)
    _, rows, cols, channels = table.shape
    # One flat gather of the four corners of every window (much faster than four multi-axis gathers).
    base = (index * rows)[:, None, None]
    top, bottom = (base + ry0[:, :, None]) * cols, (base + ry1[:, :, None]) * cols
    left, right = cx0[:, None, :], cx1[:, None, :]
    corners = np.take(table.reshape(-1, channels), np.stack([bottom + right, top + right, bottom + left,
                                                             top + left]), axis=0)
    sums = corners[0] - corners[1] - corners[2] + corners[3]
    counts = ((ry1 - ry0)[:, :, None] * (cx1 - cx0)[:, None, :])[..., None].astype(np.float32)
    return np.ascontiguousarray((sums.astype(np.float32) / counts).transpose(0, 3, 1, 2))


def _normalise(x: np.ndarray) -> np.ndarray:
    return (x - np.float32(127.5)) * np.float32(0.0078125)


def _nms(boxes: np.ndarray, scores: np.ndarray, image: np.ndarray, iou: float) -> np.ndarray:
    if not len(boxes):
        return np.zeros(0, dtype=np.int64)
    keep = batched_nms(torch.from_numpy(boxes), torch.from_numpy(scores), torch.from_numpy(image), iou)
    return keep.numpy()


def _nms_min(boxes: np.ndarray, scores: np.ndarray, image: np.ndarray, threshold: float) -> np.ndarray:
    """Greedy NMS with overlap = intersection over the smaller box (MTCNN's last stage), per image."""
    if not len(boxes):
        return np.zeros(0, dtype=np.int64)
    shifted = boxes + (image.astype(np.float32) * (boxes.max() + 1))[:, None]
    x1, y1, x2, y2 = shifted.T
    area = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.argsort(scores)
    keep = []
    while order.size:
        i, rest = order[-1], order[:-1]
        keep.append(i)
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + 1)
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + 1)
        order = rest[(w * h) / np.minimum(area[i], area[rest]) <= threshold]
    return np.asarray(keep, dtype=np.int64)


def _square(boxes: np.ndarray) -> np.ndarray:
    """Boxes made square around their centre (side = the longer side), as MTCNN's ``rerec``."""
    boxes = boxes.copy()
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    side = np.maximum(w, h)
    # Same operation order as facenet-pytorch (float32 rounding): (x + w/2) − side/2.
    boxes[:, 0] = boxes[:, 0] + w * np.float32(0.5) - side * np.float32(0.5)
    boxes[:, 1] = boxes[:, 1] + h * np.float32(0.5) - side * np.float32(0.5)
    boxes[:, 2] = boxes[:, 0] + side
    boxes[:, 3] = boxes[:, 1] + side
    return boxes


def _regress(boxes: np.ndarray, reg: np.ndarray) -> np.ndarray:
    """Apply the R-/O-Net box regression (offsets in units of the box side + 1)."""
    boxes = boxes.copy()
    w = boxes[:, 2] - boxes[:, 0] + 1
    h = boxes[:, 3] - boxes[:, 1] + 1
    boxes[:, :4] += reg[:, :4] * np.stack([w, h, w, h], axis=1)
    return boxes


def _crops(table: np.ndarray, boxes: np.ndarray, image: np.ndarray, side: int, w: int, h: int):
    """The boxes' pixels (clipped to the image, as facenet-pytorch's ``pad``) resampled to side × side."""
    b = np.trunc(boxes[:, :4]).astype(np.int64)
    x0, y0 = np.maximum(b[:, 0], 1) - 1, np.maximum(b[:, 1], 1) - 1
    x1, y1 = np.minimum(b[:, 2], w), np.minimum(b[:, 3], h)
    ok = (y1 > y0) & (x1 > x0)  # a box wholly outside the image has no pixels: dropped
    crops = area_resample(table, image[ok], y0[ok], y1[ok], x0[ok], x1[ok], side, side)
    return _normalise(crops), ok


def _run(net: Network, x: np.ndarray, chunk: int = 512) -> list[np.ndarray]:
    outs = [net(x[i:i + chunk]) for i in range(0, len(x), chunk)]
    return [np.concatenate(parts) for parts in zip(*outs)]


def detect_faces(images: np.ndarray, min_size: float, pnet: Network, rnet: Network, onet: Network,
                 thresholds: Sequence[float], factor: float) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """MTCNN on uint8 (N, H, W, 3) RGB images of one size.

    Returns per image the boxes (K, 5: x1, y1, x2, y2, score) and landmarks (K, 5, 2), in the image's pixels.
    ``pnet``/``rnet``/``onet`` take float32 NCHW arrays and return their outputs (regression, [landmarks,]
    probability) as arrays.
    """
    n, h, w = images.shape[:3]
    table = integral_images(images)
    every = np.arange(n)
    scale = 12.0 / min_size
    side = min(h, w) * scale
    found = []
    while side >= 12:
        oh, ow = int(h * scale + 1), int(w * scale + 1)
        level = area_resample(table, every, np.zeros(n, np.int64), np.full(n, h), np.zeros(n, np.int64),
                              np.full(n, w), oh, ow)
        reg, prob = pnet(_normalise(level))[:2]
        img, yy, xx = np.nonzero(prob[:, 1] >= thresholds[0])
        cells = np.stack([xx, yy], axis=1).astype(np.float32)
        s = np.float32(scale)
        boxes = np.concatenate([np.floor((2 * cells + 1) / s), np.floor((2 * cells + 12) / s),
                                prob[img, 1, yy, xx][:, None], reg[img, :, yy, xx]], axis=1).astype(np.float32)
        keep = _nms(boxes[:, :4], boxes[:, 4], img, 0.5)
        found.append((boxes[keep], img[keep]))
        scale *= factor
        side *= factor
    empty = ([np.zeros((0, 5), np.float32)] * n, [np.zeros((0, 5, 2), np.float32)] * n)
    if not found:
        return empty
    boxes = np.concatenate([f[0] for f in found])
    image = np.concatenate([f[1] for f in found])
    keep = _nms(boxes[:, :4], boxes[:, 4], image, 0.7)
    boxes, image = boxes[keep], image[keep]
    if not len(boxes):
        return empty
    # P-Net's regression is in units of the box side (without the +1 of the later stages).
    w0, h0 = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    boxes = np.concatenate([boxes[:, :4] + boxes[:, 5:9] * np.stack([w0, h0, w0, h0], axis=1), boxes[:, 4:5]],
                           axis=1)
    boxes = _square(boxes)

    crops, ok = _crops(table, boxes, image, 24, w, h)
    boxes, image = boxes[ok], image[ok]
    if not len(boxes):
        return empty
    reg, prob = _run(rnet, crops)
    passed = prob[:, 1] > thresholds[1]
    boxes = np.concatenate([boxes[passed, :4], prob[passed, 1:2]], axis=1)
    image, reg = image[passed], reg[passed]
    keep = _nms(boxes[:, :4], boxes[:, 4], image, 0.7)
    boxes = _square(_regress(boxes[keep], reg[keep]))
    image = image[keep]
    if not len(boxes):
        return empty

    crops, ok = _crops(table, boxes, image, 48, w, h)
    boxes, image = boxes[ok], image[ok]
    if not len(boxes):
        return empty
    reg, marks, prob = _run(onet, crops)
    passed = prob[:, 1] > thresholds[2]
    boxes = np.concatenate([boxes[passed, :4], prob[passed, 1:2]], axis=1)
    image, reg, marks = image[passed], reg[passed], marks[passed]
    bw = (boxes[:, 2] - boxes[:, 0] + 1)[:, None]
    bh = (boxes[:, 3] - boxes[:, 1] + 1)[:, None]
    points = np.stack([bw * marks[:, :5] + boxes[:, 0:1] - 1, bh * marks[:, 5:] + boxes[:, 1:2] - 1], axis=2)
    boxes = _regress(boxes, reg)
    keep = _nms_min(boxes[:, :4], boxes[:, 4], image, 0.7)
    boxes, image, points = boxes[keep], image[keep], points[keep]
    return [boxes[image == i] for i in range(n)], [points[image == i] for i in range(n)]
