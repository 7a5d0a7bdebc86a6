"""Enrolment's rules: which faces are good enough, the quality figure stored with a template, and reading a
photo once (its sha256 first, so a photo already enrolled is not decoded again; a big one decoded reduced to
``max_side`` pixels a side, its faces stored in the photo's own coordinates)."""
from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from facegnet.card import sha256_file
from facegnet.detection.quality import MIN_FACE_SIZE, too_small
from facegnet.errors import FacegnetError, GalleryError, ImageError
from facegnet.gallery.results import EnrollReport, EnrollResult
from facegnet.prefetch import read_ahead

if TYPE_CHECKING:
    from facegnet.detection.detector import Face

#: Photos decoded and detected together when enrolling a folder (memory: a chunk of decoded photos).
ENROLL_CHUNK = 16
#: Looks a photo's sha256 up in the gallery: (template id, person) when already enrolled.
Finder = Callable[[str], "tuple[int, str] | None"]


@dataclass
class QualityPolicy:
    """Which faces are good enough: the shorter box side (to enroll and to be named; default
    :data:`facegnet.detection.quality.MIN_FACE_SIZE`, the rule verification uses too) and, to enroll, MTCNN's score."""

    min_face: int = MIN_FACE_SIZE
    min_score: float = 0.95

    def check(self, face: Face) -> str | None:
        """The reason a face is rejected for enrolment, or None when it is good enough."""
        if (why := too_small(face, self.min_face)) is not None:
            return why
        if face.score < self.min_score:
            return f"low detection score ({face.score:.3f} < {self.min_score})"
        return None


def face_quality(face: Face) -> float:
    """A 0–1 figure stored with each template: detection score × how close the face is to 112 px."""
    return float(face.score) * min(1.0, face.size / 112.0)


@dataclass
class Pending:
    """A decoded photo waiting for its faces (between validation and storage during enrolment).

    ``array`` may be the photo reduced (``max_side``); ``scale`` maps its coordinates to the photo's own
    (``x_photo = x * scale[0]``), in which templates store their box and landmarks.
    """

    name: str
    label: str
    sha: str
    source: str | None
    array: np.ndarray
    scale: tuple[float, float] = (1.0, 1.0)

    @property
    def reduced(self) -> bool:
        return self.scale != (1.0, 1.0)

    def in_photo(self, face: Face) -> Face:
        """A face found on :attr:`array`, in the photo's own coordinates."""
        return face.scaled(*self.scale) if self.reduced else face

    def too_small_note(self) -> str:
        """What to add to a 'face too small' reason when the photo was decoded reduced ('' when it was not)."""
        if not self.reduced:
            return ""
        height, width = self.array.shape[:2]
        return f" in the photo decoded reduced to {width}×{height}"


def read_photo(name: str, image: Any, source: str | Path | None, find: Finder,
               max_side: int | None = None) -> EnrollResult | Pending:
    """Validate, fingerprint and decode one photo of ``name``: an ``exists`` result when ``find`` knows its
    sha256, else what detection needs. A photo larger than ``max_side`` pixels a side is decoded reduced (a
    JPEG by the codec itself: :func:`facegnet.io.load_image_reduced`). Raises :class:`ImageError` for a
    missing or unreadable photo."""
    from facegnet.io import Decoded, describe, load_image, load_image_reduced

    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        label = str(path)
        if not path.is_file():
            raise ImageError("file not found" if not path.exists() else "not a file", path)
        source = str(path.resolve())
        try:
            sha: str | None = sha256_file(path)
        except OSError as exc:
            raise ImageError(f"unreadable ({exc.strerror or exc})", path) from None
    else:
        label = str(source) if source is not None else describe(image)
        sha = None
    if sha is not None and (found := find(sha)) is not None:
        return exists(label, found)
    if sha is not None:  # a file: decoded straight to at most max_side (a big JPEG never at full size)
        decoded = load_image_reduced(image, max_side)
    else:  # pixels in memory: their full-size hash stands for the photo, whatever max_side
        array = load_image(image)
        sha = hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()
        if (found := find(sha)) is not None:
            return exists(label, found)
        small = max_side is None or max(array.shape[:2]) <= max_side
        decoded = Decoded(array, array.shape[1], array.shape[0]) if small else load_image_reduced(array, max_side)
    return Pending(name, label, sha, None if source is None else str(source), decoded.array, decoded.scale)


def exists(label: str, found: tuple[int, str]) -> EnrollResult:
    """The result for a photo that is already enrolled (template id, person)."""
    return EnrollResult(label, found[1], "exists", f"already enrolled as {found[1]}", found[0])


def enroll_photos(
    items: list[tuple[str, Path]],
    prepare: Callable[[str, Path, None], "EnrollResult | Pending"],
    detect_batch: Callable[[list[np.ndarray]], list[list[Face]]],
    choose: Callable[[Pending, list[Face]], Face],
    embed: Callable[[list[tuple[np.ndarray, Face]]], np.ndarray],
    store: Callable[[Pending, Face, np.ndarray, int], EnrollResult],
    *,
    progress: bool = True,
    on_result: Callable[[EnrollResult], None] | None = None,
    readers: int = 2,
) -> EnrollReport:
    """Enroll (person, photo) items, a chunk at a time, as a pipeline.

    ``prepare`` reads each photo (sha256, decode) on ``readers`` threads, one chunk ahead of the networks;
    ``detect_batch`` finds the faces of a chunk together, ``choose`` picks the face to enroll (raising
    :class:`FacegnetError` with the reason when none will do), ``embed`` embeds the chosen faces of the chunk
    in one batch, and ``store`` writes each photo in its own transaction, so an interruption leaves whole
    photos only. Results come in the order of ``items``. Bad photos are skipped with their reason; a
    GalleryError stops the run.
    """
    from tqdm import tqdm

    report = EnrollReport()
    bar = tqdm(total=len(items), desc="enrolling", unit="photo", disable=not progress, dynamic_ncols=True)

    def record(result: EnrollResult) -> None:
        report.results.append(result)
        if on_result is not None:
            on_result(result)
        bar.update(1)

    def read(name: str, photo: Path) -> EnrollResult | Pending | FacegnetError:
        try:
            return prepare(name, photo, None)
        except GalleryError:
            raise
        except FacegnetError as exc:
            return exc

    # Photos are read one chunk ahead of the networks (facegnet.prefetch); a GalleryError stops the run.
    for chunk, prepared in read_ahead(items, lambda item: read(*item), ENROLL_CHUNK, readers, "enroll-read"):
        outcome: list[EnrollResult | FacegnetError | tuple[Pending, Face, int]] = []
        pending = [item for item in prepared if isinstance(item, Pending)]
        detections = iter(detect_batch([p.array for p in pending]) if pending else [])
        for item in prepared:
            if isinstance(item, Pending):
                faces = next(detections)
                try:
                    outcome.append((item, choose(item, faces), len(faces)))
                except GalleryError:
                    raise
                except FacegnetError as exc:
                    outcome.append(exc)
            else:
                outcome.append(item)
        chosen = [o for o in outcome if isinstance(o, tuple)]
        vectors = iter(embed([(p.array, face) for p, face, _ in chosen]) if chosen else [])
        for (name, photo), item in zip(chunk, outcome):
            if isinstance(item, FacegnetError):
                record(EnrollResult(str(photo), name, "skipped", item.reason, exit_code=item.exit_code))
            elif isinstance(item, EnrollResult):
                record(item)
            else:
                p, face, count = item
                record(store(p, face, next(vectors), count))
    bar.close()
    return report


__all__ = ["QualityPolicy", "face_quality", "Pending", "read_photo", "exists", "enroll_photos", "ENROLL_CHUNK"]
