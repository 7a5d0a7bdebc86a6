"""The enrolment half of :class:`~facegnet.gallery.Gallery`: one photo, a folder, or precomputed embeddings.
Mixed into ``Gallery``. Decoding (a photo larger than the gallery's ``max_side`` reduced), detection and
embedding run outside the locks (the slow part); each photo is then stored in its own transaction under the
writer lock and the mutex. The rules themselves (which face is good enough, reading a photo once) are
:mod:`facegnet.gallery.enrolment_rules`'s.
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from facegnet.detection.quality import cut_tight, on_its_side, too_small
from facegnet.errors import GalleryError, NoFaceError
from facegnet.gallery.cache import IndexCache
from facegnet.gallery.enrolment_rules import Pending, QualityPolicy, enroll_photos, exists, face_quality, read_photo
from facegnet.gallery.folders import clean_name, discover
from facegnet.gallery.index import normalise
from facegnet.gallery.procedure import procedure_of
from facegnet.gallery.results import EnrollReport, EnrollResult
from facegnet.gallery.store import Store

if TYPE_CHECKING:
    from facegnet.detection.detector import Face
    from facegnet.recognizer import FaceRecognizer


class Enrolment:
    """Enrolment for a :class:`~facegnet.gallery.Gallery`."""

    # Provided by Gallery.
    path: Path
    store: Store
    quality: QualityPolicy
    max_side: int | None
    recognizer: FaceRecognizer
    _cache: IndexCache
    _mutex: threading.RLock
    _writer: Callable[..., AbstractContextManager]
    _check_procedure: Callable[[str], None]
    _dim: Callable[[], int]
    save: Callable[[], None]

    def enroll(self, name: str, image: Any, *, source: str | Path | None = None) -> EnrollResult:
        """Enroll the largest face of one photo as a template of ``name``.

        Returns an :class:`EnrollResult` with status ``enrolled`` or ``exists`` (this photo, by sha256, is
        already in the gallery). Raises :class:`ImageError` for an unreadable photo and
        :class:`NoFaceError` when it holds no face good enough (too small, low score, on its side).
        """
        pending = self._prepare_enrolment(name, image, source)
        if isinstance(pending, EnrollResult):
            return pending
        return self._finish_enrolment(pending, self._detect_batch([pending.array])[0])

    def _detect_batch(self, arrays: list[np.ndarray]) -> list[list[Face]]:
        # The gallery's own minimum sets the pyramid; photos without such a face are searched for smaller ones
        # only to say "face too small".
        return self.recognizer.detect_usable(arrays, self.quality.min_face)

    def _find_sha256(self, sha: str) -> tuple[int, str] | None:
        with self._mutex:
            return self.store.find_sha256(sha)

    def _prepare_enrolment(self, name: str, image: Any, source: str | Path | None) -> EnrollResult | Pending:
        """Validate, fingerprint and decode one photo: an ``exists`` result, or what detection needs."""
        name = clean_name(name)
        self._check_procedure(procedure_of(self.recognizer))
        return read_photo(name, image, source, self._find_sha256, self.max_side)

    def _finish_enrolment(self, pending: Pending, faces: list[Face]) -> EnrollResult:
        """Check the largest detected face, embed it and store it in its own transaction."""
        face = self._choose_face(pending, faces)
        embedding = self.recognizer.embed_face_list([(pending.array, face)])[0]  # outside the locks: the slow part
        return self._store_enrolment(pending, face, embedding, len(faces))

    def _choose_face(self, pending: Pending, faces: list[Face]) -> Face:
        """The face of a photo to enroll: its largest, when good enough (else NoFaceError with the reason)."""
        if not faces:
            raise NoFaceError("no face found", pending.label)
        face = max(faces, key=lambda f: f.area)
        # The rule holds on the pixels the embedding is made from: the decoded (perhaps reduced) photo's.
        if (why := self.quality.check(face)) is not None:
            if too_small(face, self.quality.min_face) is not None:
                why += pending.too_small_note()
            raise NoFaceError(why, pending.label)
        # A photo on its side may hold a false face above the score floor (0.955 for one LFW photo turned 90°).
        if (why := on_its_side(pending.array, face, self.recognizer.detector.detect, self.quality.min_face)):
            raise NoFaceError(why, pending.label)
        return face

    def _store_enrolment(self, pending: Pending, face: Face, embedding: np.ndarray, count: int) -> EnrollResult:
        """Store one photo's template in its own transaction (``count``: faces the photo held). The face was
        found on the decoded pixels; its box and landmarks are stored in the photo's own coordinates."""
        quality, face = face_quality(face), pending.in_photo(face)
        notes = [f"{count} faces in the photo; enrolled the largest"] if count > 1 else []
        if (tight := cut_tight(face)) is not None:
            notes.append(f"face is {tight}")
        with self._writer(), self._mutex:
            with self.store.write():
                if (found := self.store.find_sha256(pending.sha)) is not None:  # another writer was quicker
                    return exists(pending.label, found)
                template_id = self.store.add_template(
                    pending.name, embedding, source=pending.source, sha256=pending.sha,
                    box=face.box, score=face.score, quality=quality, landmarks=face.landmarks,
                )
            self._cache.dirty = True
        return EnrollResult(pending.label, pending.name, "enrolled", template_id=template_id, faces=count,
                            warning="; ".join(notes) or None, outside=face.outside)

    def add_embedding(self, name: str, embedding: np.ndarray, *, source: str | None = None,
                      sha256: str | None = None) -> int:
        """Add a precomputed embedding (from this gallery's model) as a template; returns its id.

        Templates added this way cannot be re-embedded by :meth:`rebuild` unless ``source`` is a photo.
        """
        return self.add_embeddings([name], np.asarray(embedding)[None], sources=[source], sha256s=[sha256])[0]

    def add_embeddings(self, names: list[str], embeddings: np.ndarray, *, sources: list[str | None] | None = None,
                       sha256s: list[str | None] | None = None) -> list[int]:
        """Add many precomputed embeddings in one transaction (into PostgreSQL in one COPY); returns their template
        ids."""
        vectors = np.asarray(embeddings, np.float32)
        dim = self._dim()
        if vectors.ndim != 2 or vectors.shape[1] != dim:
            raise GalleryError(f"embeddings of shape {vectors.shape}; this gallery holds {dim}-d vectors")
        if len(names) != len(vectors):
            raise GalleryError(f"{len(names)} names for {len(vectors)} embeddings")
        vectors = normalise(vectors)
        sources = sources or [None] * len(names)
        sha256s = sha256s or [None] * len(names)
        cleaned = [clean_name(n) for n in names]
        with self._writer(), self._mutex:
            with self.store.write():
                ids = self.store.add_templates(cleaned, vectors, sources, sha256s)
            self._cache.dirty = True
        return ids

    def enroll_folder(
        self,
        folder: str | Path,
        *,
        progress: bool = True,
        on_result: Callable[[EnrollResult], None] | None = None,
    ) -> EnrollReport:
        """Enroll every photo of a folder: ``FOLDER/Name/*.jpg`` (a sub-folder per person) or, for flat
        folders, ``FOLDER/Name.jpg`` (the file name, less a trailing ``_2``/``-2``/``(2)``, is the name).

        Photos already in the gallery (same sha256) are not enrolled again; bad photos are skipped with
        their reason. ``on_result`` sees each result as it happens (the CLI prints warnings with it).
        """
        report = enroll_photos(discover(folder), self._prepare_enrolment, self._detect_batch, self._choose_face,
                               self.recognizer.embed_face_list, self._store_enrolment, progress=progress,
                               on_result=on_result)
        if report.enrolled or not self._cache.has_file():
            self.save()
        return report
