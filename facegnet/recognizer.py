"""The Python API: one :class:`FaceRecognizer`, created once, that detects, aligns, embeds and verifies.

    >>> from facegnet import FaceRecognizer
    >>> rec = FaceRecognizer()                      # shipped weights and their calibrated threshold
    >>> result = rec.verify("a.jpg", "b.jpg")
    >>> result.similarity, result.same, result.threshold

Images may be paths, PIL images or RGB numpy arrays.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from facegnet.align import align_face, align_faces, central_landmarks
from facegnet.card import ModelCard, resolve_card
from facegnet.detection.detector import Detector, Face, measure_outside
from facegnet.detection.quality import MIN_FACE_SIZE, cut_tight, on_its_side, too_small
from facegnet.embed import Embedder
from facegnet.errors import DeviceError, FacegnetError, NoFaceError, WeightsError
from facegnet.io import ImageLike, describe, load_image

#: Embedding engines of FaceRecognizer(backend=...).
BACKENDS = ("torch", "onnx", "onnx-int8")
#: The numerics of each engine, one part of the embedding procedure. PyTorch and ONNX Runtime fp32 give the same
#: embeddings (cosine ≥ 0.9999 per face, tested in tests/test_export.py), so they are one procedure.
NUMERICS = {"torch": "fp32", "onnx": "fp32", "onnx-int8": "int8"}


@dataclass
class ImageEmbedding:
    """The embedding of one face chosen from one image, or why there is none (see ``embed_images``)."""

    source: str
    embedding: np.ndarray | None = None
    face: Face | None = None  # None when the central fallback was used
    faces: int = 0  # faces detected in the image
    error: str | None = None  # the reason, when there is no embedding
    exit_code: int = 0  # the CLI exit code of the error's class (ImageError 2, NoFaceError 3), 0 when ok
    fallback: bool = False  # no face was found and the central crop was embedded instead

    @property
    def ok(self) -> bool:
        return self.embedding is not None


@dataclass
class VerifyResult:
    """The answer of :meth:`FaceRecognizer.verify`."""

    similarity: float  # cosine similarity of the two embeddings, in [-1, 1]
    same: bool  # similarity >= threshold
    threshold: float
    face_a: Face
    face_b: Face
    faces_in_a: int = 1  # how many faces each photo held (the largest was used)
    faces_in_b: int = 1
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "similarity": round(self.similarity, 6),
            "same": self.same,
            "threshold": self.threshold,
            "faces_in_a": self.faces_in_a,
            "faces_in_b": self.faces_in_b,
            "box_a": self.face_a.to_dict()["box"],
            "box_b": self.face_b.to_dict()["box"],
            "notes": self.notes,
        }


#: How small a face a photo without a usable one is searched down to, only to report "face too small".
SMALL_FACE_PROBE = 20


class FaceRecognizer:
    """Detector, aligner and embedder behind one object.

    Args:
        weights: None for the shipped default model (an untrained, fixed-seed network until weights ship),
            a card name in ``facegnet/weights``, or a path to a model card (.json) or weights (.pt) with its card.
        threshold: cosine-similarity threshold for "same person" (default: the one the card calibrated for this
            embedding procedure, see :attr:`procedure`; a procedure without one is refused unless given).
        min_face_size: smallest face side in pixels that counts as usable for verification, enrolment and
            identification (default: :data:`facegnet.detection.quality.MIN_FACE_SIZE`, the one rule for all of them).
        detect_min_face_size: smallest face side MTCNN searches for (default: ``min_face_size``: a face that
            cannot be used is not worth a pyramid twice as deep). When a photo holds no face that large, it is
            searched again down to :data:`SMALL_FACE_PROBE` pixels, only to say "face too small" instead of
            "no face found".
        detection_thresholds: MTCNN's three stage thresholds.
        max_side: longer image side above which images are downscaled for detection.
        flip: flip test-time augmentation in the embedder (part of the procedure: thresholds differ).
        batch_size: crops per embedding forward pass.
        device: torch device ("cpu", "cuda").
        threads: CPU threads for torch (process-wide; default: torch's choice, one per core). On a
            shared machine 1 thread per process avoids the spin-waiting of oversubscribed OpenMP threads.
        backend: the embedding engine: "torch" (PyTorch), "onnx" (ONNX Runtime, fp32) or "onnx-int8" (ONNX
            Runtime, int8); the ONNX exports of the weights are made and cached on first use
            (see facegnet.deploy.exporter.cached_onnx). Default: "onnx" on a CPU (2.5× faster per face than PyTorch at
            batch 1, same embeddings), "torch" on a GPU or where onnxruntime is missing.
        detection_cache: an SQLite file where ``embed_images`` keeps the detections of image files, so a
            benchmark re-run (another model, another back-end) skips MTCNN (see facegnet.detection.cache).
        detect_engine: MTCNN's engine, "onnx" (ONNX Runtime; the default on a CPU) or "torch" (see
            :class:`facegnet.detection.detector.Detector`); both find the same faces.
    """

    def __init__(
        self,
        weights: str | Path | None = None,
        *,
        threshold: float | None = None,
        min_face_size: int = MIN_FACE_SIZE,
        detect_min_face_size: int | None = None,
        detection_thresholds: Sequence[float] = (0.6, 0.7, 0.7),
        max_side: int = 1280,
        flip: bool = True,
        batch_size: int = 64,
        device: str | torch.device = "cpu",
        threads: int | None = None,
        backend: str | None = None,
        detection_cache: str | Path | None = None,
        detect_engine: str | None = None,
    ) -> None:
        device = check_device(device)
        if backend is None:
            backend = default_backend(device)
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
        self.backend = backend
        if threads is not None:
            torch.set_num_threads(max(1, int(threads)))
        self.flip = bool(flip)
        base = resolve_card(weights)
        try:
            # The card as this procedure sees it: its thresholds were calibrated for it (galleries read them here).
            self.card: ModelCard = base.for_procedure(self.flip, NUMERICS[backend])
        except WeightsError:
            if threshold is None:
                raise
            self.card = base  # the user's threshold stands in for the missing calibration
        self.threshold = float(self.card.threshold if threshold is None else threshold)
        self.threshold_given = threshold is not None  # galleries then use it instead of the card's open-set one
        self.min_face_size = int(min_face_size)
        self.detector = Detector(
            min_face_size=min(detect_min_face_size or self.min_face_size, self.min_face_size),
            thresholds=detection_thresholds,
            max_side=max_side,
            device=device,
            engine=detect_engine,
        )
        self._embedder_options = {"flip": flip, "batch_size": batch_size, "device": device}
        self._embedder: Embedder | None = None
        self._detection_cache = None
        if detection_cache is not None:
            from facegnet.detection.cache import DetectionCache

            self._detection_cache = DetectionCache(detection_cache, self.detector)

    # -- the model --------------------------------------------------------------------------------------
    @property
    def embedder(self) -> Embedder:
        """The embedding network, built on first use and kept."""
        if self._embedder is None and self.backend != "torch":
            from facegnet.deploy.exporter import cached_onnx  # onnxruntime is loaded only when asked for
            from facegnet.deploy.onnx_embedder import OnnxEmbedder

            int8 = self.backend == "onnx-int8"
            model = cached_onnx(self.card, int8=int8)
            self._embedder = OnnxEmbedder(self.card, model=model, **self._embedder_options)
        if self._embedder is None:
            self._embedder = Embedder(self.card, **self._embedder_options)
        return self._embedder

    @property
    def fingerprint(self) -> str:
        """sha256 of the weights; galleries record it and refuse embeddings from other weights."""
        return self.card.fingerprint

    @property
    def procedure(self) -> str:
        """The embedding procedure, ``<weights sha256>:<flip|noflip>:<fp32|int8>``: embeddings (and the card's
        thresholds) are comparable only within one; galleries record it and refuse a probe from another."""
        return self.card.procedure(self.flip, NUMERICS[self.backend])

    # -- the stages --------------------------------------------------------------------------------------
    def detect(self, image: ImageLike, min_face_size: int | None = None) -> list[Face]:
        """All faces of an image, largest first (down to ``min_face_size``, default the detector's floor)."""
        return self.detector.detect(image, min_face_size)

    def detect_batch(self, images: Sequence[ImageLike], min_face_size: int | None = None) -> list[list[Face]]:
        """All faces of many images (batched through MTCNN), largest first in each."""
        return self.detector.detect_batch(images, min_face_size)

    def detect_usable(self, images: Sequence[np.ndarray], min_face_size: int | None = None) -> list[list[Face]]:
        """Faces of at least ``min_face_size`` px (default: this recognizer's) per image; where an image has
        none, the faces found down to :data:`SMALL_FACE_PROBE` px instead, all too small, so that the caller
        can say "face too small" rather than "no face found"."""
        floor = self.min_face_size if min_face_size is None else int(min_face_size)
        found = self.detect_batch(images, floor)
        return [faces or self._small_faces(image, floor) for image, faces in zip(images, found)]

    def align(self, image: ImageLike, faces: Sequence[Face]) -> np.ndarray:
        """Aligned 112×112 crops of these faces: uint8 (N, 112, 112, 3)."""
        return align_faces(load_image(image), [face.landmarks for face in faces], self.card.input_size)

    def embed_crops(self, crops: np.ndarray) -> np.ndarray:
        """Embeddings of aligned crops: float32 (N, D) unit vectors."""
        return self.embedder(crops)

    def embed_faces(self, image: ImageLike, faces: Sequence[Face]) -> np.ndarray:
        """Embeddings of the given faces of one image: float32 (N, D) unit vectors."""
        array = load_image(image)
        return self.embed_face_list([(array, face) for face in faces])

    def embed_face_list(self, faces: Sequence[tuple[np.ndarray, Face]]) -> np.ndarray:
        """Embeddings of faces of several decoded images, ``(image, face)`` pairs, as one batch: (N, D)."""
        if not faces:
            return np.zeros((0, self.embedder.dim), dtype=np.float32)
        crops = np.stack([align_face(array, face.landmarks, self.card.input_size) for array, face in faces])
        return self.embed_crops(crops)

    def embed(self, image: ImageLike) -> tuple[list[Face], np.ndarray]:
        """Detect every face of one image and embed each: (faces, (N, D) embeddings)."""
        array = load_image(image)
        faces = self.detect(array)
        return faces, self.embed_faces(array, faces)

    def embed_images(
        self,
        images: Sequence[ImageLike],
        *,
        select: str = "largest",
        fallback_center: bool = False,
        chunk: int = 64,
        progress: bool | str = False,
        decode_threads: int = 2,
    ) -> list[ImageEmbedding]:
        """Embed one face of each of many images, batched; a bad image is reported, never fatal.

        Args:
            select: "largest" face, or the face whose centre is nearest the image "center" (benchmarks).
            fallback_center: when no face is found, embed the central crop instead of reporting an error.
            chunk: images decoded, detected and embedded together.
            progress: show a tqdm bar with throughput and ETA (a string is its description).
            decode_threads: threads decoding the next chunk while this one is detected and embedded.
        """
        return list(self.iter_embeddings(images, select=select, fallback_center=fallback_center, chunk=chunk,
                                         progress=progress, decode_threads=decode_threads))

    def iter_embeddings(
        self,
        images: Sequence[ImageLike],
        *,
        select: str = "largest",
        fallback_center: bool = False,
        chunk: int = 64,
        progress: bool | str = False,
        decode_threads: int = 2,
    ) -> Iterator[ImageEmbedding]:
        """:meth:`embed_images` as a stream, in input order, one chunk at a time (for folders of any size).

        A pipeline: while MTCNN and the embedding network work on one chunk, ``decode_threads`` threads decode
        (and EXIF-orient) the next, so decoding costs no wall time when the networks are the slower stage.
        """
        from tqdm import tqdm

        from facegnet.io import load_image_or_error
        from facegnet.prefetch import read_ahead

        bar = tqdm(total=len(images), desc=progress if isinstance(progress, str) else "embedding",
                   unit="img", disable=not progress, dynamic_ncols=True)
        for batch, decoded in read_ahead(images, load_image_or_error, chunk, decode_threads, "facegnet-decode"):
            yield from self._embed_chunk(batch, decoded, select, fallback_center)
            bar.update(len(batch))
        bar.close()

    def _embed_chunk(self, batch: Sequence[ImageLike], decoded: Sequence[np.ndarray | FacegnetError], select: str,
                     fallback_center: bool) -> list[ImageEmbedding]:
        """Detect, select, align and embed one chunk of decoded images (errors already in ``decoded``)."""
        chunk_results = [ImageEmbedding(describe(image)) for image in batch]
        loaded: list[tuple[int, np.ndarray]] = []
        for i, item in enumerate(decoded):
            if isinstance(item, FacegnetError):
                chunk_results[i].error, chunk_results[i].exit_code = item.reason, item.exit_code
            else:
                loaded.append((i, item))
        detections = self._detect_loaded([batch[i] for i, _ in loaded], [array for _, array in loaded])
        crops, owners = [], []
        for (i, array), faces in zip(loaded, detections):
            result = chunk_results[i]
            result.faces = len(faces)
            if not faces and not fallback_center:
                faces = self._small_faces(array, self.detector.min_face_size)
            face = self._select(faces, array.shape, select)
            if face is not None and face.size < self.min_face_size and not fallback_center:
                result.error = too_small(face, self.min_face_size)
                result.exit_code = NoFaceError.exit_code
                continue
            if face is not None:
                result.face = face
                crops.append(align_face(array, face.landmarks, self.card.input_size))
            elif fallback_center:
                result.fallback = True
                landmarks = central_landmarks(*array.shape[:2])
                crops.append(align_face(array, landmarks, self.card.input_size))
            else:
                result.error, result.exit_code = "no face found", NoFaceError.exit_code
                continue
            owners.append(i)
        if crops:
            for i, embedding in zip(owners, self.embed_crops(np.stack(crops))):
                chunk_results[i].embedding = embedding
        return chunk_results

    def _detect_loaded(self, sources: Sequence[ImageLike], arrays: Sequence[np.ndarray]) -> list[list[Face]]:
        """Detect faces in decoded images, through the detection cache when there is one."""
        if self._detection_cache is None:
            return self.detect_batch(arrays)
        keys = [self._detection_cache.key(source) for source in sources]
        cached = self._detection_cache.get_many(keys)
        todo = [i for i, key in enumerate(keys) if key is None or key not in cached]
        fresh = self.detect_batch([arrays[i] for i in todo]) if todo else []
        self._detection_cache.put_many((keys[i], faces) for i, faces in zip(todo, fresh))
        found = dict(zip(todo, fresh))
        # Cached faces carry no share outside their photo: it is measured again (cheap, no pixels).
        return [found[i] if i in found else measure_outside(cached[keys[i]], arrays[i].shape)
                for i in range(len(arrays))]

    def _small_faces(self, array: np.ndarray, floor: int) -> list[Face]:
        """Faces below ``floor`` (down to SMALL_FACE_PROBE px) of an image that has none above it."""
        if floor <= SMALL_FACE_PROBE:
            return []
        return self.detector.detect(array, min_face_size=SMALL_FACE_PROBE)

    @staticmethod
    def _select(faces: Sequence[Face], shape: tuple[int, ...], select: str) -> Face | None:
        if not faces:
            return None
        if select == "largest":
            return faces[0]
        if select == "center":
            centre = np.array([shape[1] / 2, shape[0] / 2])
            return min(faces, key=lambda f: float(np.linalg.norm((f.box[:2] + f.box[2:]) / 2 - centre)))
        raise ValueError(f"select must be 'largest' or 'center', not {select!r}")

    # -- verification ---------------------------------------------------------------------------------------
    def largest_face(self, image: ImageLike) -> tuple[np.ndarray, Face, int]:
        """The decoded image, its largest usable face and how many faces it held.

        Raises :class:`NoFaceError` naming the image when it holds no face, none of ``min_face_size``, or
        lies on its side (:func:`~facegnet.detection.quality.on_its_side`: the face found is a false one).
        """
        array = load_image(image)
        faces = self.detect_usable([array])[0]
        if not faces:
            raise NoFaceError("no face found", describe(image))
        face = faces[0]
        if (why := too_small(face, self.min_face_size)) is not None:
            raise NoFaceError(why, describe(image))
        if (why := on_its_side(array, face, self.detector.detect, self.min_face_size)) is not None:
            raise NoFaceError(why, describe(image))
        return array, face, len(faces)

    def embed_largest(self, image: ImageLike) -> tuple[np.ndarray, Face, int]:
        """Embedding of the largest face of an image, the face, and how many faces the image held."""
        array, face, count = self.largest_face(image)
        return self.embed_faces(array, [face])[0], face, count

    def verify(self, a: ImageLike, b: ImageLike, threshold: float | None = None) -> VerifyResult:
        """Are the largest faces of ``a`` and ``b`` the same person?"""
        threshold = self.threshold if threshold is None else float(threshold)
        emb_a, face_a, count_a = self.embed_largest(a)
        emb_b, face_b, count_b = self.embed_largest(b)
        similarity = cosine_similarity(emb_a, emb_b)
        notes = [
            f"{describe(img)} holds {count} faces; the largest was used"
            for img, count in ((a, count_a), (b, count_b))
            if count > 1
        ]
        notes += [f"{describe(img)}: face is {why}" for img, face in ((a, face_a), (b, face_b))
                  if (why := cut_tight(face)) is not None]
        return VerifyResult(similarity, similarity >= threshold, threshold, face_a, face_b, count_a, count_b, notes)


def default_backend(device: torch.device) -> str:
    """"onnx" on a CPU when onnxruntime is installed (it is a dependency), else "torch"."""
    import importlib.util

    if device.type == "cpu" and importlib.util.find_spec("onnxruntime") is not None:
        return "onnx"
    return "torch"


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two embeddings (unit vectors give their dot product)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    norm = np.linalg.norm(a) * np.linalg.norm(b)
    return float(a @ b / norm) if norm > 0 else 0.0


def check_device(device: str | torch.device) -> torch.device:
    """The torch device, or :class:`DeviceError` when this machine has no such device."""
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise DeviceError(f"unknown device {str(device)!r} ({exc})") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"device {str(device)!r} requested but CUDA is not available here; use --device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise DeviceError(f"device {str(device)!r} does not exist ({torch.cuda.device_count()} GPUs here)")
    return device
