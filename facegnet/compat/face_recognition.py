"""face_recognition's seven functions, run by facegnet: switch with one import line, no dlib to build.

    import facegnet.compat.face_recognition as face_recognition

    image = face_recognition.load_image_file("unknown.jpg")
    boxes = face_recognition.face_locations(image)                 # [(top, right, bottom, left), ...]
    encodings = face_recognition.face_encodings(image, boxes)      # 512-d numpy arrays
    face_recognition.compare_faces(known_encodings, encodings[0])  # [True, False, ...] at tolerance 0.6

The signatures, argument names, defaults and return types are face_recognition's (1.3/1.4). Underneath,
MTCNN finds the faces (``model="hog"`` and ``"cnn"`` both run it) and facegnet's embedding network encodes them.

**Distances keep their meaning.** Encodings are 512-d vectors scaled (see :func:`encoding_scale`) so that the
plain Euclidean distance between two of them is 0.6 exactly at the model card's calibrated verification
threshold, the decision ``facegnet verify`` makes. ``compare_faces(..., tolerance=0.6)``, ``face_distance(...) <=
0.6``, ``numpy.linalg.norm`` and scikit-learn's KNN with a 0.6 cut-off all decide as facegnet does; lower
tolerances are stricter. A 128-d encoding made by dlib is refused with one line naming its shape: encodings
from different models cannot be compared.

Every difference from face_recognition is listed in docs/migrating-from-face_recognition.md.
"""
from __future__ import annotations

import hashlib
import math
import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import IO, Any

import cv2
import numpy as np
from PIL import Image

from facegnet.align import CROP_SIZE, TEMPLATE, similarity_transform
from facegnet.errors import DataError, ImageError
from facegnet.io import load_image

__all__ = [
    "DEFAULT_TOLERANCE",
    "EncodingError",
    "ArgumentError",
    "batch_face_locations",
    "compare_faces",
    "encoding_scale",
    "face_distance",
    "face_encodings",
    "face_landmarks",
    "face_locations",
    "load_image_file",
    "recognizer",
    "tolerance_to_similarity",
    "use_recognizer",
]

#: face_recognition's default tolerance; the encodings are scaled so that it is the card's threshold.
DEFAULT_TOLERANCE = 0.6

#: Smallest face dlib's detectors find at ``number_of_times_to_upsample=0`` (their 80-pixel window); each upsample
#: halves it (1 → 40 px, 2 → 20 px).
BASE_MIN_FACE = 80
#: MTCNN frames a face narrower than dlib does: its box is 0.87 as wide as dlib's HOG box of the same face (median
#: over 198 LFW faces, 0.871; quartiles 0.831 and 0.923: benchmarks/results/box_width_ratio.md, made by
#: benchmarks/box_width_ratio.py). The floors above are dlib's measure, so MTCNN searches down to 0.87 of them
#: (70, 35, 17 px of its own box): upsample 0 then finds the faces dlib finds at upsample 0.
MTCNN_WIDTH_PER_DLIB_WIDTH = 0.87
#: The finest face MTCNN's first network can see is 12 px; more upsampling than that only costs time.
FINEST_MIN_FACE = 12

DETECTION_MODELS = ("hog", "cnn")
LANDMARK_MODELS = ("large", "small")

#: Largest random change of a jittered crop (``num_jitters`` > 1): rotation in degrees, scale, shift in pixels of
#: the 112-pixel crop. dlib's jitter moves its 150-pixel chip by up to 3 pixels and rotates and scales it a little.
JITTER_ROTATION = 5.0
JITTER_SCALE = 0.05
JITTER_SHIFT = 2.0


class EncodingError(DataError, ValueError):
    """A face encoding that facegnet's encodings cannot be compared with (another model's, or not a vector)."""


class ArgumentError(DataError, ValueError):
    """An argument face_recognition's API does not accept: a malformed face location, an unknown model or mode."""


# -- the recognizer behind the functions ------------------------------------------------------------------------
_lock = threading.RLock()
_recognizer = None
#: Faces that face_locations found in recent images, by the image's digest: face_encodings and face_landmarks given
#: the same image with those boxes reuse MTCNN's landmarks instead of running O-Net again inside each box.
_recent: OrderedDict[tuple, list] = OrderedDict()
_RECENT_IMAGES = 8


def recognizer():
    """The :class:`facegnet.FaceRecognizer` these functions use: the shipped weights, created on first use."""
    global _recognizer
    with _lock:
        if _recognizer is None:
            from facegnet.recognizer import FaceRecognizer

            _recognizer = FaceRecognizer()
        return _recognizer


def use_recognizer(instance) -> None:
    """Run these functions with another :class:`facegnet.FaceRecognizer` (other weights, a GPU, a threshold).

    The encodings' scale follows its threshold, so tolerance 0.6 stays its decision; encodings made before the
    switch are not comparable with those made after it.
    """
    global _recognizer
    with _lock:
        _recognizer = instance
        _recent.clear()


def encoding_scale(threshold: float | None = None) -> float:
    """The length of an encoding: 0.6 / sqrt(2 − 2·threshold).

    Two unit vectors with cosine similarity ``c`` are sqrt(2 − 2c) apart; scaled by ``s`` they are s·sqrt(2 − 2c)
    apart, which is 0.6 exactly when ``c`` is the threshold. ``threshold`` defaults to the recognizer's (the model
    card's calibrated verification threshold for its embedding procedure).
    """
    t = float(recognizer().threshold if threshold is None else threshold)
    if not -1.0 < t < 1.0:
        raise ValueError(f"a cosine-similarity threshold lies between -1 and 1, not {t}")
    return DEFAULT_TOLERANCE / math.sqrt(2.0 - 2.0 * t)


def tolerance_to_similarity(tolerance: float, threshold: float | None = None) -> float:
    """The cosine similarity a ``tolerance`` stands for: faces match when their similarity is at least this."""
    scaled = float(tolerance) / encoding_scale(threshold)
    return 1.0 - scaled * scaled / 2.0


def _expected_size() -> int:
    with _lock:
        if _recognizer is not None:
            return int(_recognizer.card.embedding_size)
    from facegnet.card import resolve_card

    return int(resolve_card(None).embedding_size)


# -- images ------------------------------------------------------------------------------------------------------
def load_image_file(file: str | IO[bytes], mode: str = "RGB") -> np.ndarray:
    """Load an image file (a path or a binary file object) into a numpy array.

    ``mode="RGB"`` gives (H, W, 3) uint8, ``mode="L"`` a (H, W) uint8 grey image. EXIF orientation is applied and
    transparency is composited onto white. A missing, empty or unreadable file raises
    :class:`facegnet.ImageError` naming it.
    """
    if mode not in ("RGB", "L"):
        raise ArgumentError(f"mode must be 'RGB' or 'L', not {mode!r}")
    if hasattr(file, "read"):  # a file object (an upload, an open file): decoded here, errors named as for a path
        name = getattr(file, "name", "<file object>")
        try:
            with Image.open(file) as image:
                image.load()
                rgb = load_image(image)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            raise ImageError(f"not an image or truncated ({exc})", name) from None
    else:
        rgb = load_image(file)
    if mode == "L":
        return np.asarray(Image.fromarray(rgb).convert("L"))
    return rgb


def _rgb(img: Any) -> np.ndarray:
    """Any image face_recognition took (a numpy array, grey or RGB) as facegnet's RGB uint8 array."""
    return load_image(np.asarray(img) if isinstance(img, (list, tuple)) else img)


def _digest(rgb: np.ndarray) -> tuple:
    return rgb.shape, hashlib.blake2b(rgb.data, digest_size=16).digest()


def _remember(rgb: np.ndarray, faces: list) -> None:
    with _lock:
        key = _digest(rgb)
        known = _recent.pop(key, [])
        _recent[key] = faces + [f for f in known if all(f is not g for g in faces)]
        while len(_recent) > _RECENT_IMAGES:
            _recent.popitem(last=False)


def _recalled(rgb: np.ndarray) -> list:
    with _lock:
        return list(_recent.get(_digest(rgb), []))


# -- face locations ----------------------------------------------------------------------------------------------
def _min_face(number_of_times_to_upsample: int) -> int:
    try:
        times = int(number_of_times_to_upsample)
    except (TypeError, ValueError):
        raise ArgumentError(f"number_of_times_to_upsample must be a whole number, not "
                            f"{number_of_times_to_upsample!r}") from None
    if times < 0:
        raise ArgumentError(f"number_of_times_to_upsample must be 0 or more, not {times}")
    return max(FINEST_MIN_FACE, round(BASE_MIN_FACE * MTCNN_WIDTH_PER_DLIB_WIDTH / 2 ** min(times, 8)))


def _check_model(model: str, allowed: Sequence[str], what: str) -> None:
    if model not in allowed:
        raise ArgumentError(f"{what} model must be one of {', '.join(map(repr, allowed))}, not {model!r}")


def _css(face, shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    """A face's box as face_recognition's (top, right, bottom, left) ints, clipped to the image as it clips."""
    x1, y1, x2, y2 = (round(float(v)) for v in face.box)
    height, width = shape[:2]
    return max(y1, 0), min(x2, width), min(y2, height), max(x1, 0)


def _detect(rgb: np.ndarray, number_of_times_to_upsample: int) -> list:
    faces = recognizer().detect(rgb, min_face_size=_min_face(number_of_times_to_upsample))
    _remember(rgb, faces)
    return faces


def face_locations(img: np.ndarray, number_of_times_to_upsample: int = 1,
                   model: str = "hog") -> list[tuple[int, int, int, int]]:
    """Bounding boxes of the faces in an image: a list of (top, right, bottom, left) tuples, largest face first.

    Args:
        img: an RGB (H, W, 3) or grey (H, W) numpy array (RGBA drops its alpha channel).
        number_of_times_to_upsample: the smallest face found, as dlib measures faces: 0 → 80 px, 1 → 40 px,
            2 → 20 px (higher finds smaller faces, more slowly), as dlib's upsampling of its 80-px window did.
            MTCNN's boxes are narrower than dlib's, so the smallest box returned is 0.87 of that (70, 35, 17 px).
        model: "hog" or "cnn"; both run MTCNN.
    """
    _check_model(model, DETECTION_MODELS, "face detection")
    rgb = _rgb(img)
    return [_css(face, rgb.shape) for face in _detect(rgb, number_of_times_to_upsample)]


def batch_face_locations(images: Sequence[np.ndarray], number_of_times_to_upsample: int = 1,
                         batch_size: int = 128) -> list[list[tuple[int, int, int, int]]]:
    """:func:`face_locations` of many images, detected ``batch_size`` at a time (images of one size share MTCNN
    batches): one list of (top, right, bottom, left) tuples per image, largest face first."""
    size = int(batch_size)
    if size < 1:
        raise ArgumentError(f"batch_size must be 1 or more, not {batch_size!r}")
    floor = _min_face(number_of_times_to_upsample)
    arrays = [_rgb(image) for image in images]
    found: list[list[tuple[int, int, int, int]]] = []
    for start in range(0, len(arrays), size):
        chunk = arrays[start:start + size]
        for rgb, faces in zip(chunk, recognizer().detect_batch(chunk, min_face_size=floor)):
            _remember(rgb, faces)
            found.append([_css(face, rgb.shape) for face in faces])
    return found


def _boxes(face_locations: Iterable[Sequence[float]]) -> np.ndarray:
    """(top, right, bottom, left) tuples as (K, 4) x1, y1, x2, y2 floats."""
    rows = []
    for location in face_locations:
        try:
            top, right, bottom, left = (float(v) for v in location)
        except (TypeError, ValueError):
            raise ArgumentError(f"a face location is a (top, right, bottom, left) tuple of numbers, not "
                                f"{location!r}") from None
        rows.append((left, top, right, bottom))
    return np.asarray(rows, dtype=np.float32).reshape(-1, 4)


def _landmarks(rgb: np.ndarray, face_locations: Iterable[Sequence[float]] | None) -> list[np.ndarray]:
    """Five MTCNN landmarks (5, 2) per face: of the faces found (upsample 1) when no locations are given, else of
    each given box (MTCNN's own points for a box face_locations just returned for this image, else O-Net's)."""
    if face_locations is None:
        return [face.landmarks for face in _detect(rgb, 1)]
    boxes = _boxes(face_locations)
    recent = {_css(face, rgb.shape): face.landmarks for face in _recalled(rgb)}
    # A box given back exactly as face_locations returned it (whole numbers) reuses that face's landmarks.
    points: list[np.ndarray | None] = []
    for x1, y1, x2, y2 in boxes:
        whole = all(float(v).is_integer() for v in (x1, y1, x2, y2))
        points.append(recent.get((int(y1), int(x2), int(y2), int(x1))) if whole else None)
    todo = [i for i, p in enumerate(points) if p is None]
    if todo:
        from facegnet.compat.box_landmarks import landmarks_in_boxes

        for i, found in zip(todo, landmarks_in_boxes(recognizer().detector, rgb, boxes[todo])):
            points[i] = found
    return [np.asarray(p, dtype=np.float32) for p in points]


# -- landmarks ---------------------------------------------------------------------------------------------------
def _point(p: np.ndarray) -> tuple[int, int]:
    return round(float(p[0])), round(float(p[1]))


def face_landmarks(face_image: np.ndarray, face_locations: Sequence[Sequence[float]] | None = None,
                   model: str = "large") -> list[dict[str, list[tuple[int, int]]]]:
    """The facial features of each face, as (x, y) int points under face_recognition's key names.

    facegnet finds five points per face (MTCNN's: both eye centres, the nose tip, both mouth corners), so each
    dict holds what five points can give:

    - ``model="large"``: ``left_eye`` and ``right_eye`` (one point each, the eye's centre, where dlib gave six
      around the eye), ``nose_tip`` (one point, where dlib gave five along the nose's base), ``top_lip``
      (mouth corner on the image's left, then on its right) and ``bottom_lip`` (right, then left: the two points
      the 68-point model's lips start and turn at). The 68-point model's ``chin``, ``left_eyebrow``,
      ``right_eyebrow`` and ``nose_bridge`` have no counterpart and are absent, as are the lips' other ten points.
    - ``model="small"``: ``left_eye``, ``right_eye`` and ``nose_tip``, one point each (dlib's five-point model
      gave the two corners of each eye and the base of the nose).

    ``left_eye`` is the eye on the image's left, as in face_recognition. Without ``face_locations`` the faces are
    found as :func:`face_locations` finds them (upsample 1); with them, MTCNN's landmark stage runs in each box.
    """
    _check_model(model, LANDMARK_MODELS, "landmark")
    rgb = _rgb(face_image)
    found = []
    for points in _landmarks(rgb, face_locations):
        left_eye, right_eye, nose, mouth_left, mouth_right = (_point(p) for p in points)
        if model == "small":
            found.append({"nose_tip": [nose], "left_eye": [left_eye], "right_eye": [right_eye]})
        else:
            found.append({"nose_tip": [nose], "left_eye": [left_eye], "right_eye": [right_eye],
                          "top_lip": [mouth_left, mouth_right], "bottom_lip": [mouth_right, mouth_left]})
    return found


# -- encodings ---------------------------------------------------------------------------------------------------
def _jittered(rgb: np.ndarray, points: np.ndarray, count: int, size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """``count`` aligned crops of one face: the template alignment first, then randomly rotated, scaled and
    shifted copies of it (the test-time jitter of dlib's ``num_jitters``)."""
    template = TEMPLATE * (size / CROP_SIZE)
    base = np.vstack([similarity_transform(points, template), [0.0, 0.0, 1.0]])
    crops = []
    for k in range(count):
        matrix = base
        if k:
            jitter = cv2.getRotationMatrix2D((size / 2.0, size / 2.0), rng.uniform(-JITTER_ROTATION, JITTER_ROTATION),
                                             1.0 + rng.uniform(-JITTER_SCALE, JITTER_SCALE))
            jitter[:, 2] += rng.uniform(-JITTER_SHIFT, JITTER_SHIFT, 2) * (size / CROP_SIZE)
            matrix = np.vstack([jitter, [0.0, 0.0, 1.0]]) @ base
        crops.append(cv2.warpAffine(rgb, matrix[:2], (size, size), flags=cv2.INTER_LINEAR,
                                    borderMode=cv2.BORDER_CONSTANT, borderValue=0))
    return crops


def face_encodings(face_image: np.ndarray, known_face_locations: Sequence[Sequence[float]] | None = None,
                   num_jitters: int = 1, model: str = "small") -> list[np.ndarray]:
    """The 512-d encoding (float64 numpy array) of each face in an image.

    Args:
        face_image: an RGB (H, W, 3) or grey (H, W) numpy array.
        known_face_locations: (top, right, bottom, left) boxes from any source (face_locations, another
            detector, a previous video frame); each face is aligned by MTCNN's landmark stage run inside its box.
            Without them, every face face_locations finds (upsample 1) is encoded.
        num_jitters: 1 encodes the aligned face as the model card's procedure does (with its mirror image); more
            average the encodings of that many crops, the aligned one and randomly rotated, scaled and shifted
            copies (repeatable: the same image gives the same encodings).
        model: "small" or "large" (face_recognition's landmark models); both align on MTCNN's five points.

    The encodings are scaled so that a Euclidean distance of 0.6 is the card's verification threshold (see
    :func:`encoding_scale`).
    """
    _check_model(model, LANDMARK_MODELS, "landmark")
    try:
        jitters = max(1, int(num_jitters))
    except (TypeError, ValueError):
        raise ArgumentError(f"num_jitters must be a whole number, not {num_jitters!r}") from None
    rgb = _rgb(face_image)
    points = _landmarks(rgb, known_face_locations)
    if not points:
        return []
    rec = recognizer()
    size = rec.card.input_size
    rng = np.random.default_rng(jitters)
    crops = [crop for p in points for crop in _jittered(rgb, p, jitters, size, rng)]
    embeddings = rec.embed_crops(np.stack(crops)).astype(np.float64).reshape(len(points), jitters, -1).mean(axis=1)
    embeddings /= np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
    scale = encoding_scale(rec.threshold)
    return [embedding * scale for embedding in embeddings]


# -- comparing ---------------------------------------------------------------------------------------------------
def _as_encodings(values: Any, what: str, rows: bool) -> np.ndarray:
    """Encodings as float64, (N, D) when ``rows`` else (D,); another size (dlib's 128) is one clear error."""
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise EncodingError(f"{what} must be numeric face encodings, not {type(values).__name__}") from None
    size = _expected_size()
    if not rows and array.shape == (1, size):  # one encoding kept as a one-row array: numpy broadcast it before
        array = array[0]
    if array.ndim != (2 if rows else 1) or array.shape[-1] != size:
        hint = (" (128-d encodings come from dlib's face_recognition: encode the photos again with "
                "facegnet.compat.face_recognition.face_encodings)" if array.shape[-1:] == (128,) else "")
        wanted = f"(N, {size})" if rows else f"({size},)"
        raise EncodingError(f"{what} has shape {array.shape}, not {wanted}: facegnet's face encodings are "
                            f"{size}-d{hint}")
    return array


def face_distance(face_encodings: Sequence[np.ndarray] | np.ndarray, face_to_compare: np.ndarray) -> np.ndarray:
    """The Euclidean distance of each encoding in ``face_encodings`` to ``face_to_compare``: a (N,) numpy array.

    0.6 is the model card's verification threshold; smaller distances are more similar faces.
    """
    if len(face_encodings) == 0:
        return np.empty(0)
    known = _as_encodings(face_encodings, "face_encodings", rows=True)
    probe = _as_encodings(face_to_compare, "face_to_compare", rows=False)
    return np.linalg.norm(known - probe, axis=1)


def compare_faces(known_face_encodings: Sequence[np.ndarray] | np.ndarray, face_encoding_to_check: np.ndarray,
                  tolerance: float = DEFAULT_TOLERANCE) -> list[bool]:
    """Which known encodings match the one to check: True where their distance is at most ``tolerance``.

    0.6 decides as ``facegnet verify`` does (the card's threshold); lower tolerances are stricter.
    """
    return list(face_distance(known_face_encodings, face_encoding_to_check) <= tolerance)
