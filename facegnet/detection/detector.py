"""Face detection with MTCNN (facenet-pytorch): every face of an image with its box, score and 5 landmarks.

facenet-pytorch ships the MTCNN weights inside its package, so nothing is downloaded. Images of equal size
are detected as one batch; very large images are downscaled for detection and the coordinates mapped back.

Two engines run the same algorithm (facenet-pytorch's ``detect_face``, the function its public ``MTCNN.detect``
calls). ``engine="onnx"``, the default on a CPU, runs the three networks in ONNX Runtime (exported from
facenet-pytorch's own weights on first use and cached, :mod:`facegnet.detection.mtcnn_onnx`) and the stages around them
in NumPy (:mod:`facegnet.detection.mtcnn_stages`: one integral image per photo serves every resampling). ``engine="torch"``
calls facenet-pytorch's ``detect_face`` with its PyTorch networks (GPUs). Both find the same faces to float
tolerance; tests/test_detect_align.py checks that against ``MTCNN.detect`` on LFW photos, and pins the internal
contract the torch engine relies on (``detect_face``'s signature and the networks' outputs), so a
facenet-pytorch upgrade that changes it fails a test instead of detection.

The pyramid starts at ``min_face_size``: each halving of it roughly quadruples the pixels P-Net scans, so
callers search only as small as the task needs (see :class:`facegnet.recognizer.FaceRecognizer`).
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace

import cv2
import numpy as np
import torch

from facegnet.align import outside_share, rounded_share
from facegnet.io import ImageLike, load_image

#: MTCNN engines: "onnx" (ONNX Runtime, faster on a CPU) or "torch" (facenet-pytorch's modules as they are).
ENGINES = ("onnx", "torch")


@dataclass
class Face:
    """One detected face, in pixel coordinates of the (EXIF-oriented) input image."""

    box: np.ndarray  # (4,) float32: x1, y1, x2, y2
    score: float  # detection probability from MTCNN's last stage
    landmarks: np.ndarray  # (5, 2) float32: image-left eye, image-right eye, nose, mouth left, mouth right
    #: Share of this face's aligned crop that lies outside its image (filled black), None where not measured;
    #: above :data:`facegnet.detection.quality.TIGHT_CROP` the photo is cut too close (see ``cut_tight``).
    outside: float | None = None

    @property
    def width(self) -> float:
        return float(self.box[2] - self.box[0])

    @property
    def height(self) -> float:
        return float(self.box[3] - self.box[1])

    @property
    def area(self) -> float:
        return max(self.width, 0.0) * max(self.height, 0.0)

    @property
    def size(self) -> float:
        """The shorter side of the box, the figure minimum-face-size rules compare against."""
        return min(self.width, self.height)

    def scaled(self, sx: float, sy: float) -> "Face":
        """The same face in pixels ``sx``×``sy`` times as large: one found on a photo decoded reduced, in the
        photo's own pixels (:attr:`facegnet.io.Decoded.scale`)."""
        return replace(self, box=np.asarray(self.box, np.float32) * np.float32([sx, sy, sx, sy]),
                       landmarks=np.asarray(self.landmarks, np.float32) * np.float32([sx, sy]))

    def to_dict(self) -> dict:
        return {
            "box": [round(float(v), 1) for v in self.box],
            "score": round(float(self.score), 4),
            "landmarks": [[round(float(x), 1), round(float(y), 1)] for x, y in self.landmarks],
            **({} if self.outside is None else {"outside": rounded_share(self.outside)}),
        }


class Detector:
    """MTCNN face detector.

    Args:
        min_face_size: smallest face side, in pixels of the original image, that is searched for.
        thresholds: MTCNN's three stage thresholds (P-Net, R-Net, O-Net).
        factor: scale step of the image pyramid.
        max_side: images whose longer side exceeds this are downscaled for detection (speed, memory);
            boxes and landmarks are mapped back to the original pixels.
        device: torch device for MTCNN.
        batch_size: images of one size run through MTCNN together (8–16 is fastest on a CPU).
        engine: "onnx" (ONNX Runtime; CPU only, the default there) or "torch"; None picks "onnx" on a CPU and
            "torch" on a GPU.
        threads: ONNX Runtime threads per network (default: torch's thread count, see
            :func:`facegnet.deploy.onnx_embedder.default_threads`).
    """

    def __init__(
        self,
        min_face_size: int = 20,
        thresholds: Sequence[float] = (0.6, 0.7, 0.7),
        factor: float = 0.709,
        max_side: int = 1280,
        device: str | torch.device = "cpu",
        batch_size: int = 16,
        engine: str | None = None,
        threads: int | None = None,
    ) -> None:
        if min_face_size < 1:
            raise ValueError("min_face_size must be at least 1 pixel")
        self.min_face_size = int(min_face_size)
        self.thresholds = [float(t) for t in thresholds]
        self.factor = float(factor)
        self.max_side = int(max_side)
        self.device = torch.device(device)
        self.batch_size = max(1, int(batch_size))
        if engine is None:
            engine = "onnx" if self.device.type == "cpu" else "torch"
        if engine not in ENGINES:
            raise ValueError(f"engine must be one of {', '.join(ENGINES)}, not {engine!r}")
        if engine == "onnx" and self.device.type != "cpu":
            raise ValueError("the onnx MTCNN engine runs on the CPU; use engine='torch' on a GPU")
        self.engine = engine
        self.threads = threads
        self._nets = None  # created on first use: P-Net, R-Net, O-Net

    def networks(self) -> tuple:
        """P-, R- and O-Net of this detector's engine, created on first use (one copy of the weights for every
        caller, e.g. landmarks found inside a box the user gives)."""
        if self._nets is None:
            if self.engine == "onnx":
                from facegnet.detection.mtcnn_onnx import ort_networks

                self._nets = ort_networks(self.threads)
            else:
                from facenet_pytorch.models.mtcnn import ONet, PNet, RNet

                self._nets = tuple(net().to(self.device).eval() for net in (PNet, RNet, ONet))
        return self._nets

    def detect(self, image: ImageLike, min_face_size: int | None = None) -> list[Face]:
        """All faces of one image, largest first (``min_face_size``: this once, instead of the detector's)."""
        return self.detect_batch([image], min_face_size)[0]

    def detect_batch(self, images: Sequence[ImageLike], min_face_size: int | None = None) -> list[list[Face]]:
        """Detect faces in many images; images of the same (detection) size run as one MTCNN batch.

        Returns one list of faces per image, each sorted largest first. ``min_face_size`` overrides the
        detector's for this call (a smaller one searches a deeper, slower pyramid).
        """
        floor = self.min_face_size if min_face_size is None else int(min_face_size)
        arrays = [load_image(image) for image in images]
        results: list[list[Face]] = [[] for _ in arrays]
        groups: dict[tuple[int, int], list[tuple[int, np.ndarray, float]]] = defaultdict(list)
        for index, array in enumerate(arrays):
            scaled, scale = self._downscale(array)
            groups[scaled.shape[:2]].append((index, scaled, scale))
        for (height, width), members in groups.items():
            # MTCNN's pyramid is empty when the image is smaller than the smallest face searched for.
            min_size = max(1, int(round(floor * members[0][2])))
            if min(height, width) < max(min_size, 12):
                continue
            for start in range(0, len(members), self.batch_size):  # bounded batches: flat memory, faster on CPU
                chunk = members[start : start + self.batch_size]
                batch = np.stack([m[1] for m in chunk])
                boxes, points = self._run_mtcnn(batch, min_size)
                for (index, _, scale), b, p in zip(chunk, boxes, points):
                    faces = measure_outside(self._faces(b, p, 1.0 / scale), arrays[index].shape)
                    # MTCNN's box regression can return faces below the pyramid's floor: honour the minimum.
                    results[index] = [face for face in faces if face.size >= floor]
        return results

    def _downscale(self, array: np.ndarray) -> tuple[np.ndarray, float]:
        longest = max(array.shape[:2])
        if longest <= self.max_side:
            return array, 1.0
        scale = self.max_side / longest
        size = (max(1, round(array.shape[1] * scale)), max(1, round(array.shape[0] * scale)))
        return cv2.resize(array, size, interpolation=cv2.INTER_AREA), scale

    def _run_mtcnn(self, batch: np.ndarray, min_size: int):
        pnet, rnet, onet = self.networks()
        if self.engine == "onnx":
            from facegnet.detection.mtcnn_stages import detect_faces

            return detect_faces(batch, min_size, pnet.infer, rnet.infer, onet.infer, self.thresholds, self.factor)
        from facenet_pytorch.models.utils.detect_face import detect_face

        with torch.inference_mode():
            return detect_face(batch, min_size, pnet, rnet, onet, self.thresholds, self.factor, self.device)

    @staticmethod
    def _faces(boxes, points, inverse_scale: float) -> list[Face]:
        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 5)
        points = np.asarray(points, dtype=np.float32).reshape(-1, 5, 2)
        faces = [
            Face(box=b[:4] * inverse_scale, score=float(b[4]), landmarks=p * inverse_scale)
            for b, p in zip(boxes, points)
        ]
        faces.sort(key=lambda face: face.area, reverse=True)
        return faces


def measure_outside(faces: list[Face], shape: Sequence[int]) -> list[Face]:
    """Set each face's :attr:`Face.outside` for its image of this ``shape`` (height, width, ...); returns them."""
    for face in faces:
        face.outside = outside_share(shape, face.landmarks)
    return faces
