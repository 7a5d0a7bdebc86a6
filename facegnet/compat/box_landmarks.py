"""Five landmarks of a face whose box came from anywhere, by running MTCNN's landmark stage (O-Net) inside it.

face_recognition's users pass boxes from dlib's detectors, their own detectors or a previous video frame. The
embedding needs the five points the ArcFace template aligns, so each box is squared about its centre and given
to O-Net, the same 48×48 "area" resampling, normalisation and point mapping MTCNN's last stage applies to the
boxes R-Net hands it (:mod:`facegnet.detection.mtcnn_stages`). O-Net's box regression then refines the box and
O-Net runs once more: a box that is tighter or looser than MTCNN's own (dlib's are tighter) lands on MTCNN's
framing before the points are read.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from facegnet.detection.detector import Detector
from facegnet.detection.mtcnn_stages import area_resample, integral_images

Network = Callable[[np.ndarray], Sequence[np.ndarray]]

#: O-Net passes per box: the first moves the box onto MTCNN's framing, the second reads the points.
PASSES = 2


def onet_of(detector: Detector) -> Network:
    """The detector's O-Net as a function of float32 (N, 3, 48, 48) arrays → [regression, landmarks, prob]."""
    onet = detector.networks()[2]  # the detector's own O-Net: one copy of the weights, either engine
    if hasattr(onet, "infer"):
        return onet.infer

    def run(x: np.ndarray) -> list[np.ndarray]:
        with torch.inference_mode():
            return [t.cpu().numpy() for t in onet(torch.from_numpy(x).to(detector.device))]

    return run


def _square(boxes: np.ndarray) -> np.ndarray:
    """(K, 4) x1, y1, x2, y2 boxes made square about their centres, side = the longer side (MTCNN's ``rerec``)."""
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    side = np.maximum(w, h)
    x0 = boxes[:, 0] + w * 0.5 - side * 0.5
    y0 = boxes[:, 1] + h * 0.5 - side * 0.5
    return np.stack([x0, y0, x0 + side, y0 + side], axis=1)


def _onet_inputs(table: np.ndarray, boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    """The boxes' pixels, clipped to the image as MTCNN clips them, area-resampled to 48×48 and normalised."""
    b = np.trunc(boxes).astype(np.int64)
    x0, y0 = np.maximum(b[:, 0], 1) - 1, np.maximum(b[:, 1], 1) - 1
    x1, y1 = np.minimum(np.maximum(b[:, 2], x0 + 1), width), np.minimum(np.maximum(b[:, 3], y0 + 1), height)
    x0, y0 = np.minimum(x0, x1 - 1), np.minimum(y0, y1 - 1)  # a box outside the image still gets one pixel
    crops = area_resample(table, np.zeros(len(b), np.int64), y0, y1, x0, x1, 48, 48)
    return (crops - np.float32(127.5)) * np.float32(0.0078125)


def landmarks_in_boxes(detector: Detector, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Five landmarks (K, 5, 2) in image pixels for each (K, 4) x1, y1, x2, y2 box of an RGB uint8 image.

    The order is MTCNN's (and the alignment template's): image-left eye, image-right eye, nose tip, mouth
    corner on the image's left, mouth corner on the image's right.
    """
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    if not len(boxes):
        return np.zeros((0, 5, 2), np.float32)
    height, width = image.shape[:2]
    table = integral_images(image[None])
    onet = onet_of(detector)
    points = np.zeros((len(boxes), 5, 2), np.float32)
    for _ in range(PASSES):
        boxes = _square(boxes)
        reg, marks = onet(_onet_inputs(table, boxes, width, height))[:2]
        bw = (boxes[:, 2] - boxes[:, 0] + 1)[:, None]
        bh = (boxes[:, 3] - boxes[:, 1] + 1)[:, None]
        points = np.stack([bw * marks[:, :5] + boxes[:, 0:1] - 1, bh * marks[:, 5:] + boxes[:, 1:2] - 1], axis=2)
        boxes = boxes + reg[:, :4] * np.concatenate([bw, bh, bw, bh], axis=1)
    return points.astype(np.float32)
