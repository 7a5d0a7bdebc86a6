"""The :class:`Gallery`: enroll people from photos, identify faces against them, safely shared on disk.

A gallery is a directory (default ``./gallery``)::

    gallery.sqlite   people, templates (source photo, its sha256, box, score, quality, landmarks, embedding),
                     and meta (the model fingerprint, the index kind, a change counter)   <- source of truth
    index.faiss      the FAISS index of the embeddings                                   <- a cache
    gallery.lock     writers take an exclusive flock on it

Every enrolment is one SQLite transaction, so a kill at any moment leaves the gallery before or after a whole
photo. The index is verified against SQLite whenever it is used (a change counter makes that cheap) and
topped up or rebuilt from it, so a stale or damaged index file is harmless. Files are created owner-only.

    >>> from facegnet import Gallery
    >>> with Gallery("gallery", create=True) as gallery:
    ...     gallery.enroll_folder("people/")            # people/Alice/1.jpg, people/Bob.jpg, ...
    ...     for match in gallery.identify("group.jpg"):
    ...         print(match.name, match.similarity)
"""
from __future__ import annotations

import fcntl
import os
import re
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from facegnet.card import ModelCard, resolve_card, sha256_file
from facegnet.errors import DataError, FacegnetError, GalleryError, ImageError, NoFaceError
from facegnet.gallery import index as index_module
from facegnet.gallery.index import KINDS, GalleryIndex, normalise, resolve_kind
from facegnet.gallery.store import SCHEMA_VERSION, Store

if TYPE_CHECKING:  # the recogniser pulls in torch: import it only when a model is really needed
    from facegnet.detect import Face
    from facegnet.recognizer import FaceRecognizer

DEFAULT_GALLERY = Path("gallery")
DB_NAME = "gallery.sqlite"
INDEX_NAME = "index.faiss"
LOCK_NAME = "gallery.lock"
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm", ".pgm"})
AGGREGATES = ("max", "mean")
#: Templates an IVF-PQ search shortlists per query before exact re-scoring.
RERANK_SHORTLIST = 64
#: Photos decoded and detected together when enrolling a folder (memory: a chunk of decoded photos).
ENROLL_CHUNK = 16
UNKNOWN = "unknown"
# "Alice_2.jpg", "Alice-02.png", "Alice (3).jpg" in a flat folder are all Alice.
_NUMBER_SUFFIX = re.compile(r"(?:[ _\-]+\(?\d+\)?|\s*\(\d+\))$")


# ----------------------------------------------------------------------------------------------- results
@dataclass
class QualityPolicy:
    """Which enrolment faces are good enough: shorter box side and MTCNN score."""

    min_face: int = 40
    min_score: float = 0.95

    def check(self, face: Face) -> str | None:
        """The reason a face is rejected, or None when it is good enough."""
        if face.size < self.min_face:
            return f"face too small ({face.width:.0f}×{face.height:.0f} px; at least {self.min_face} px needed)"
        if face.score < self.min_score:
            return f"low detection score ({face.score:.3f} < {self.min_score})"
        return None


def face_quality(face: Face) -> float:
    """A 0–1 figure stored with each template: detection score × how close the face is to 112 px."""
    return float(face.score) * min(1.0, face.size / 112.0)


@dataclass
class EnrollResult:
    """What happened to one photo: ``enrolled``, ``exists`` (already in the gallery) or ``skipped``."""

    source: str
    name: str
    status: str
    reason: str = ""
    template_id: int | None = None
    faces: int = 0
    warning: str | None = None
    exit_code: int = 0  # of the error that made it skipped (see facegnet.errors)


@dataclass
class _Pending:
    """A decoded photo waiting for its faces (between validation and storage during enrolment)."""

    name: str
    label: str
    sha: str
    source: str | None
    array: np.ndarray


@dataclass
class EnrollReport:
    """All results of one :meth:`Gallery.enroll_folder` run."""

    results: list[EnrollResult] = field(default_factory=list)

    def _with(self, status: str) -> list[EnrollResult]:
        return [r for r in self.results if r.status == status]

    @property
    def enrolled(self) -> list[EnrollResult]:
        return self._with("enrolled")

    @property
    def existing(self) -> list[EnrollResult]:
        return self._with("exists")

    @property
    def skipped(self) -> list[EnrollResult]:
        return self._with("skipped")

    def skip_reasons(self) -> dict[str, int]:
        """How many photos were skipped for each kind of reason (numbers stripped)."""
        counts: dict[str, int] = {}
        for result in self.skipped:
            kind = result.reason.split(" (")[0]
            counts[kind] = counts.get(kind, 0) + 1
        return counts

    def summary(self) -> str:
        people = len({r.name for r in self.enrolled})
        parts = [f"enrolled {len(self.enrolled)} photo(s) of {people} person(s)"]
        if self.existing:
            parts.append(f"{len(self.existing)} already in the gallery")
        if self.skipped:
            reasons = ", ".join(f"{n} {why}" for why, n in sorted(self.skip_reasons().items()))
            parts.append(f"skipped {len(self.skipped)} ({reasons})")
        return "; ".join(parts)


@dataclass
class Candidate:
    """A person the gallery offers for a face."""

    name: str
    similarity: float
    template_id: int  # the best-matching template of this person


@dataclass
class Identification:
    """The answer for one face: the best person if at or above the threshold, else ``unknown``."""

    name: str
    similarity: float  # of the best candidate, known or not
    threshold: float
    candidates: list[Candidate]
    face: Face | None = None

    @property
    def known(self) -> bool:
        return self.name != UNKNOWN

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.face is not None:
            out["box"] = [round(float(v), 1) for v in self.face.box]
            out["score"] = round(float(self.face.score), 4)
        out["name"] = self.name
        out["similarity"] = round(float(self.similarity), 4)
        out["candidates"] = [{"name": c.name, "similarity": round(float(c.similarity), 4)} for c in self.candidates]
        return out


@dataclass
class RebuildReport:
    """What :meth:`Gallery.rebuild` did."""

    reembedded: int
    dropped: list[tuple[str, str]]  # (source, reason) of templates that could not be re-embedded
    fingerprint: str
    index_kind: str


# ----------------------------------------------------------------------------------------------- the gallery
class Gallery:
    """A directory of enrolled people that identifies faces.

    Args:
        path: the gallery directory (default ``./gallery``).
        recognizer: the :class:`~facegnet.recognizer.FaceRecognizer` that detects and embeds; created
            lazily from ``weights`` when needed (listing or removing people needs no model).
        weights: weights for that lazy recogniser (see :func:`facegnet.card.resolve_card`).
        create: create the gallery if it does not exist (otherwise a missing gallery is a GalleryError).
        index: index kind for a new gallery, or to switch an existing one (``auto``, ``flat``, ``pq``,
            ``ivf``, ``hnsw``, ``ivfpq``; see :mod:`facegnet.gallery.index`); None keeps what it records.
        check_fingerprint: refuse a gallery made with other weights (turn off to list, remove or rebuild).
        quality: which enrolment faces are good enough.
        lock_timeout: seconds a writer waits for another writer before giving up.
    """

    def __init__(
        self,
        path: str | Path = DEFAULT_GALLERY,
        *,
        recognizer: FaceRecognizer | None = None,
        weights: str | Path | None = None,
        create: bool = False,
        index: str | None = None,
        check_fingerprint: bool = True,
        quality: QualityPolicy | None = None,
        lock_timeout: float = 60.0,
    ) -> None:
        if index is not None and index != "auto" and index not in KINDS:
            raise GalleryError(f"unknown index kind {index!r} (choose from auto, {', '.join(KINDS)})")
        self.path = Path(path)
        self._recognizer = recognizer
        self._weights = weights
        self.card: ModelCard = recognizer.card if recognizer is not None else resolve_card(weights)
        self.quality = quality or QualityPolicy()
        self.lock_timeout = float(lock_timeout)
        self._lock_fd: int | None = None
        self._lock_depth = 0
        self._index: GalleryIndex | None = None
        self._index_state: tuple[str, int, int, int] | None = None  # (epoch, generation, removals, max id)
        self._index_dirty = False
        self.store = self._open(create, index)
        if check_fingerprint:
            self.check_fingerprint()

    # ------------------------------------------------------------------------------------------ opening
    def _open(self, create: bool, index: str | None) -> Store:
        db = self.path / DB_NAME
        missing = f" (enroll people first: facegnet enroll FOLDER --gallery {self.path})"
        if self.path.exists() and not self.path.is_dir():
            raise GalleryError("not a directory", self.path)
        if not db.exists():
            if not create:
                raise GalleryError(f"no gallery here{missing}", self.path)
            self._create_dir()
        store = Store.open(db, create=create)
        if store.get_meta("fingerprint") is None:  # new (or its creation was interrupted)
            if not create:
                store.close()
                raise GalleryError(f"no gallery here{missing}", self.path)
            with self._writer():
                store.initialise(self.card.fingerprint, self.card.name, self.card.embedding_size, index or "auto")
        if index is not None and store.get_meta("index_kind") != index:
            with self._writer(), store.write():
                store.set_meta("index_kind", index)
        version = int(store.get_meta("schema_version", "0") or 0)
        if version > SCHEMA_VERSION:
            store.close()
            raise GalleryError(f"made by a newer facegnet (schema {version} > {SCHEMA_VERSION})", self.path)
        return store

    def _create_dir(self) -> None:
        """Make the gallery directory, owner-only: embeddings are biometric data."""
        try:
            self.path.mkdir(parents=True, exist_ok=True, mode=0o700)
            if self.path.stat().st_uid == os.getuid():  # also an existing folder that becomes a gallery
                os.chmod(self.path, 0o700)
        except OSError as exc:
            raise GalleryError(f"cannot create the gallery ({exc.strerror or exc})", self.path) from None

    def check_fingerprint(self) -> None:
        """Raise GalleryError if the gallery's embeddings came from other weights than the recogniser's."""
        recorded = self.store.get_meta("fingerprint")
        if recorded != self.card.fingerprint:
            made_with = self.store.get_meta("model", "?")
            raise GalleryError(
                f"made with other weights ({made_with}, {str(recorded)[:12]}) than the current model "
                f"({self.card.name}, {self.card.fingerprint[:12]}); run `facegnet gallery rebuild --gallery "
                f"{self.path}` to re-embed it, or use the weights it was made with",
                self.path,
            )

    @property
    def recognizer(self) -> FaceRecognizer:
        """The recogniser, created on first use from the ``weights`` given to the gallery."""
        if self._recognizer is None:
            from facegnet.recognizer import FaceRecognizer

            self._recognizer = FaceRecognizer(self._weights)
        return self._recognizer

    @property
    def threshold(self) -> float:
        """Default open-set threshold: one given to the recogniser, else the model card's identification threshold
        (stricter than its verification one when the card has it, see :attr:`ModelCard.open_set_threshold`)."""
        if self._recognizer is not None and self._recognizer.threshold_given:
            return float(self._recognizer.threshold)
        return self.card.open_set_threshold

    @property
    def fingerprint(self) -> str:
        return self.store.get_meta("fingerprint") or ""

    def close(self) -> None:
        """Save the index if it changed (when no other writer holds the gallery) and close the database."""
        if self._index_dirty and self._index is not None:
            try:
                with self._writer(timeout=0.0):
                    self._save_index()
            except GalleryError:
                pass  # another writer is busy: the next open tops the index up from SQLite
        self.store.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> "Gallery":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------------------------------ locking
    @contextmanager
    def _writer(self, timeout: float | None = None) -> Iterator[None]:
        """Exclusive writer lock (flock) on ``gallery.lock``; re-entrant within this object."""
        if self._lock_depth:
            self._lock_depth += 1
            try:
                yield
            finally:
                self._lock_depth -= 1
            return
        if self._lock_fd is None:
            self._lock_fd = os.open(self.path / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + (self.lock_timeout if timeout is None else timeout)
        while True:
            try:
                fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = os.pread(self._lock_fd, 32, 0).decode(errors="replace").strip() or "?"
                    raise GalleryError(
                        f"busy: another process (pid {holder}) is writing to it; try again later", self.path
                    ) from None
                time.sleep(0.05)
        os.ftruncate(self._lock_fd, 0)
        os.pwrite(self._lock_fd, str(os.getpid()).encode(), 0)
        self._lock_depth = 1
        try:
            yield
        finally:
            self._lock_depth = 0
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    # ------------------------------------------------------------------------------------------ the index
    @property
    def index(self) -> GalleryIndex:
        """The FAISS index, loaded or built on first use and kept in step with SQLite."""
        if self._index is None:
            self._load_index()
        self._sync_index()
        assert self._index is not None
        if self._index_outdated():
            self._build_index()
        return self._index

    def _wanted_kind(self, count: int) -> str:
        """The index kind this gallery should use at ``count`` templates (what a build would give)."""
        return resolve_kind(self.store.get_meta("index_kind", "auto") or "auto", count)[0]

    def _index_outdated(self) -> bool:
        """The gallery outgrew (or shrank out of) its index kind, or an IVF index its training."""
        assert self._index is not None
        count = len(self._index)
        wanted = self._wanted_kind(count)
        if wanted != self._index.kind:
            # Hysteresis for ``auto``: a gallery hovering at the size limit does not flip kinds each time.
            auto = (self.store.get_meta("index_kind", "auto") or "auto") == "auto"
            return not (auto and wanted == "flat" and count >= index_module.AUTO_EXACT_MAX // 2)
        trained_on = int(self._index.params.get("trained_on", 0) or 0)
        return self._index.kind in index_module.TRAINED and count > 4 * trained_on

    def _load_index(self) -> None:
        """Load index.faiss if it holds this store's embeddings (same epoch); otherwise build from SQLite."""
        try:
            index, header = GalleryIndex.load(self.path / INDEX_NAME)
            if header.get("epoch") == self.store.epoch() and index.dim == self._dim():
                self._index = index
                self._index_state = (
                    str(header["epoch"]), int(header["generation"]), int(header["removals"]),
                    int(header["max_id"]),
                )
                return
        except (OSError, ValueError, KeyError, TypeError):
            pass  # missing or damaged: it is only a cache
        self._build_index()

    def _dim(self) -> int:
        return int(self.store.get_meta("embedding_size", "512") or 512)

    def _build_index(self) -> None:
        with self.store.read():
            state = self._store_state()
            ids, vectors = self.store.embeddings()
        self._index = GalleryIndex.build(self._dim(), ids, vectors, kind=self._wanted_kind(len(ids)))
        self._index_state = state
        self._index_dirty = True

    def _store_state(self) -> tuple[str, int, int, int]:
        max_id = self.store.conn.execute("SELECT COALESCE(MAX(id), 0) FROM templates").fetchone()[0]
        return (self.store.epoch(), self.store.generation(), int(self.store.get_meta("removals", "0") or 0),
                int(max_id))

    def _sync_index(self) -> None:
        """Bring the in-memory index in step with SQLite (one cheap query when nothing changed)."""
        assert self._index is not None and self._index_state is not None
        with self.store.read():
            state = self._store_state()
            if state[:2] == self._index_state[:2]:
                return
            rebuild = state[0] != self._index_state[0]  # embeddings replaced wholesale (rebuild)
            if not rebuild:
                if state[2] == self._index_state[2]:
                    # Nothing removed since our state, and template ids only grow: fetch the newer ones.
                    rows = self.store.conn.execute(
                        "SELECT id FROM templates WHERE id > ? ORDER BY id", (self._index_state[3],)
                    ).fetchall()
                    missing = np.array([r[0] for r in rows], np.int64)
                    extra = np.zeros(0, np.int64)
                else:
                    stored = self.store.template_ids()
                    held = self._index.ids()
                    missing = np.setdiff1d(stored, held, assume_unique=True)
                    extra = np.setdiff1d(held, stored, assume_unique=True)
                _, vectors = self.store.embeddings(missing)
        if rebuild:
            self._build_index()
            return
        self._index.remove(extra)
        self._index.add(missing, vectors)
        self._index_state = state
        self._index_dirty = True

    def _save_index(self) -> None:
        """Write index.faiss for the store's current state; call holding the writer lock."""
        index = self.index  # synced
        assert self._index_state is not None
        epoch, generation, removals, max_id = self._index_state
        index.save(
            self.path / INDEX_NAME,
            {"epoch": epoch, "generation": generation, "removals": removals, "max_id": max_id},
        )
        self._index_dirty = False

    def save(self) -> None:
        """Write the index file now (it is also written after enroll_folder, remove, rebuild and close)."""
        with self._writer():
            self._save_index()

    def verify_consistency(self) -> dict[str, Any]:
        """Compare SQLite with the index: template ids in each, and whether they agree."""
        index = self.index
        stored = self.store.template_ids()
        held = index.ids()
        people_without = self.store.conn.execute(
            "SELECT COUNT(*) FROM people p WHERE NOT EXISTS (SELECT 1 FROM templates t WHERE t.person_id = p.id)"
        ).fetchone()[0]
        return {
            "sqlite_templates": len(stored),
            "index_entries": len(held),
            "consistent": bool(np.array_equal(stored, held)) and people_without == 0,
            "people_without_templates": int(people_without),
            "integrity": self.store.integrity_ok(),
        }

    # ------------------------------------------------------------------------------------------ enrolment
    def enroll(self, name: str, image: Any, *, source: str | Path | None = None) -> EnrollResult:
        """Enroll the largest face of one photo as a template of ``name``.

        Returns an :class:`EnrollResult` with status ``enrolled`` or ``exists`` (this photo, by sha256, is
        already in the gallery). Raises :class:`ImageError` for an unreadable photo and
        :class:`NoFaceError` when it holds no face good enough (too small, low score).
        """
        pending = self._prepare_enrolment(name, image, source)
        if isinstance(pending, EnrollResult):
            return pending
        return self._finish_enrolment(pending, self.recognizer.detect(pending.array))

    def _prepare_enrolment(self, name: str, image: Any, source: str | Path | None) -> "EnrollResult | _Pending":
        """Validate, fingerprint and decode one photo: an ``exists`` result, or what detection needs."""
        from facegnet.io import describe, load_image

        name = _clean_name(name)
        self.check_fingerprint()
        if isinstance(image, (str, os.PathLike)):
            path = Path(image)
            label = str(path)
            if not path.is_file():
                raise ImageError("file not found" if not path.exists() else "not a file", path)
            source = str(path.resolve())
            try:
                sha = sha256_file(path)
            except OSError as exc:
                raise ImageError(f"unreadable ({exc.strerror or exc})", path) from None
        else:
            label = str(source) if source is not None else describe(image)
            sha = None
        if sha is not None and (found := self.store.find_sha256(sha)) is not None:
            return EnrollResult(label, found[1], "exists", f"already enrolled as {found[1]}", found[0])
        array = load_image(image)
        if sha is None:
            import hashlib

            sha = hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()
            if (found := self.store.find_sha256(sha)) is not None:
                return EnrollResult(label, found[1], "exists", f"already enrolled as {found[1]}", found[0])
        return _Pending(name, label, sha, None if source is None else str(source), array)

    def _finish_enrolment(self, pending: "_Pending", faces: list[Face]) -> EnrollResult:
        """Check the largest detected face, embed it and store it in its own transaction."""
        if not faces:
            raise NoFaceError("no face found", pending.label)
        face = max(faces, key=lambda f: f.area)
        if (why := self.quality.check(face)) is not None:
            raise NoFaceError(why, pending.label)
        embedding = self.recognizer.embed_faces(pending.array, [face])[0]
        warning = f"{len(faces)} faces in the photo; enrolled the largest" if len(faces) > 1 else None
        with self._writer(), self.store.write():
            if (found := self.store.find_sha256(pending.sha)) is not None:  # another process was quicker
                return EnrollResult(pending.label, found[1], "exists", f"already enrolled as {found[1]}", found[0])
            template_id = self.store.add_template(
                pending.name, embedding, source=pending.source, sha256=pending.sha,
                box=face.box, score=face.score, quality=face_quality(face), landmarks=face.landmarks,
            )
        self._index_dirty = True
        return EnrollResult(pending.label, pending.name, "enrolled", template_id=template_id, faces=len(faces),
                            warning=warning)

    def add_embedding(self, name: str, embedding: np.ndarray, *, source: str | None = None,
                      sha256: str | None = None) -> int:
        """Add a precomputed embedding (from this gallery's model) as a template; returns its id.

        Templates added this way cannot be re-embedded by :meth:`rebuild` unless ``source`` is a photo.
        """
        return self.add_embeddings([name], np.asarray(embedding)[None], sources=[source], sha256s=[sha256])[0]

    def add_embeddings(self, names: list[str], embeddings: np.ndarray, *, sources: list[str | None] | None = None,
                       sha256s: list[str | None] | None = None) -> list[int]:
        """Add many precomputed embeddings in one transaction; returns their template ids."""
        vectors = np.asarray(embeddings, np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self._dim():
            raise GalleryError(f"embeddings of shape {vectors.shape}; this gallery holds {self._dim()}-d vectors")
        if len(names) != len(vectors):
            raise GalleryError(f"{len(names)} names for {len(vectors)} embeddings")
        vectors = normalise(vectors)
        sources = sources or [None] * len(names)
        sha256s = sha256s or [None] * len(names)
        cleaned = [_clean_name(n) for n in names]
        with self._writer(), self.store.write():
            ids = [self.store.add_template(n, v, source=s, sha256=h)
                   for n, v, s, h in zip(cleaned, vectors, sources, sha256s)]
        self._index_dirty = True
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
        from tqdm import tqdm

        items = discover(folder)
        report = EnrollReport()
        bar = tqdm(total=len(items), desc="enrolling", unit="photo", disable=not progress, dynamic_ncols=True)

        def record(result: EnrollResult) -> None:
            report.results.append(result)
            if on_result is not None:
                on_result(result)
            bar.update(1)

        def skipped(name: str, photo: Path, exc: FacegnetError) -> EnrollResult:
            return EnrollResult(str(photo), name, "skipped", exc.reason, exit_code=exc.exit_code)

        # Photos are decoded a chunk at a time and detected together (MTCNN batches same-sized photos), then
        # each is stored in its own transaction, so an interruption still leaves whole photos only.
        for start in range(0, len(items), ENROLL_CHUNK):
            chunk = items[start : start + ENROLL_CHUNK]
            prepared: list[tuple[str, Path, EnrollResult | _Pending | FacegnetError]] = []
            for name, photo in chunk:
                try:
                    prepared.append((name, photo, self._prepare_enrolment(name, photo, None)))
                except GalleryError:
                    raise
                except FacegnetError as exc:
                    prepared.append((name, photo, exc))
            pending = [p for _, _, p in prepared if isinstance(p, _Pending)]
            detections = iter(self.recognizer.detect_batch([p.array for p in pending]) if pending else [])
            for name, photo, item in prepared:
                if isinstance(item, FacegnetError):
                    record(skipped(name, photo, item))
                elif isinstance(item, EnrollResult):
                    record(item)
                else:
                    faces = next(detections)
                    try:
                        record(self._finish_enrolment(item, faces))
                    except GalleryError:
                        raise
                    except FacegnetError as exc:
                        record(skipped(name, photo, exc))
        bar.close()
        if report.enrolled or not (self.path / INDEX_NAME).exists():
            self.save()
        return report

    # ------------------------------------------------------------------------------------------ search
    def identify(
        self,
        image: Any,
        *,
        top_k: int = 1,
        threshold: float | None = None,
        aggregate: str = "max",
    ) -> list[Identification]:
        """Every face of a photo (largest first) with its best person, or ``unknown`` below the threshold.

        Args:
            top_k: candidates listed for each face.
            threshold: open-set threshold (default: the model card's calibrated one).
            aggregate: score a person by the ``max`` of their templates' similarities (default) or the ``mean``.
        """
        from facegnet.io import load_image

        self.check_fingerprint()
        array = load_image(image)
        faces, embeddings = self.recognizer.embed(array)
        matches = self.search(embeddings, top_k=top_k, threshold=threshold, aggregate=aggregate)
        for face, match in zip(faces, matches):
            match.face = face
        return matches

    def search(
        self,
        embeddings: np.ndarray,
        *,
        top_k: int = 1,
        threshold: float | None = None,
        aggregate: str = "max",
    ) -> list[Identification]:
        """Identify embeddings (one per row) made with this gallery's model. See :meth:`identify`."""
        if aggregate not in AGGREGATES:
            raise GalleryError(f"aggregate must be one of {', '.join(AGGREGATES)}, not {aggregate!r}")
        threshold = self.threshold if threshold is None else float(threshold)
        top_k = max(1, int(top_k))
        queries = normalise(np.asarray(embeddings, np.float32).reshape(-1, self._dim()))
        if not len(queries):
            return []
        index = self.index
        total = len(index)
        if total == 0:
            raise GalleryError("the gallery is empty: enroll people first", self.path)
        # Several templates per person: fetch enough templates to see top_k distinct people.
        # IVF-PQ similarities are approximate: fetch a longer shortlist and re-score it exactly from SQLite,
        # so that the threshold is compared with true cosine similarities.
        approximate = index.kind == "ivfpq"
        k = min(total, max(RERANK_SHORTLIST if approximate else 32, 8 * top_k))
        while True:
            sims, ids = index.search(queries, k)
            if approximate:
                sims, ids = self._rescore(queries, ids)
            names = self.store.names_of(ids)
            ranked = [_best_per_person(s, i, names) for s, i in zip(sims, ids)]
            if k >= total or all(len(r) >= top_k for r in ranked):
                break
            k = min(total, 4 * k)
        if aggregate == "mean":
            ranked = [self._mean_scores(q, r) for q, r in zip(queries, ranked)]
        out = []
        for candidates in ranked:
            candidates = candidates[:top_k]
            best = candidates[0] if candidates else Candidate(UNKNOWN, float("-inf"), -1)
            name = best.name if best.similarity >= threshold else UNKNOWN
            out.append(Identification(name, float(best.similarity), threshold, candidates))
        return out

    def _rescore(self, queries: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Exact similarities of each query's shortlisted templates (from SQLite), best first."""
        known, vectors = self.store.embeddings(np.unique(ids[ids >= 0]))
        row = {int(t): n for n, t in enumerate(known)}
        sims = np.full(ids.shape, -np.inf, np.float32)
        for q, (query, shortlist) in enumerate(zip(queries, ids)):
            for j, tid in enumerate(shortlist.tolist()):
                if tid in row:
                    sims[q, j] = float(vectors[row[tid]] @ query)
        order = np.argsort(-sims, axis=1, kind="stable")
        sims, ids = np.take_along_axis(sims, order, 1), np.take_along_axis(ids, order, 1)
        return sims, np.where(np.isinf(sims), -1, ids)

    def _mean_scores(self, query: np.ndarray, candidates: list[Candidate]) -> list[Candidate]:
        """Re-score candidates by the mean similarity over all of each person's templates."""
        rescored = []
        for cand in candidates:
            _, vectors = self.store.embeddings(self.store.template_ids(cand.name))
            if len(vectors):
                rescored.append(Candidate(cand.name, float(np.mean(vectors @ query)), cand.template_id))
        return sorted(rescored, key=lambda c: -c.similarity)

    # ------------------------------------------------------------------------------------------ housekeeping
    def __len__(self) -> int:
        """Number of templates."""
        return self.store.count()[1]

    def people(self) -> list[tuple[str, int]]:
        """(name, number of templates) of every enrolled person, by name."""
        return [(p.name, p.templates) for p in self.store.people()]

    def templates(self, name: str | None = None):
        """The stored templates (without embeddings) of one person or of everyone."""
        return self.store.templates(name)

    def info(self) -> dict[str, Any]:
        """A summary: location, counts, model, index, threshold, sizes on disk."""
        meta = self.store.meta()
        people, templates = self.store.count()
        files = {name: (self.path / name) for name in (DB_NAME, INDEX_NAME)}
        kind = meta.get("index_kind", "auto")
        return {
            "path": str(self.path.resolve()),
            "people": people,
            "templates": templates,
            "model": meta.get("model"),
            "fingerprint": meta.get("fingerprint"),
            "fingerprint_matches": meta.get("fingerprint") == self.card.fingerprint,
            "current_model": self.card.name,
            "embedding_size": int(meta.get("embedding_size", 512)),
            "index_kind": kind,
            "index_in_use": resolve_kind(kind, templates)[0],
            "threshold": self.threshold,
            "created": float(meta.get("created", 0)),
            "bytes": {name: p.stat().st_size for name, p in files.items() if p.exists()},
        }

    def remove_person(self, name: str) -> int:
        """Remove a person and all their templates; returns how many templates went."""
        return self.remove_people([name])[name]

    def remove_people(self, names: list[str]) -> dict[str, int]:
        """Remove several people in one transaction (all or none); returns templates removed per name."""
        removed: dict[str, int] = {}
        with self._writer():
            with self.store.write():
                for name in names:
                    if self.store.person_id(name) is None:
                        raise GalleryError(f"no person named {name!r} in the gallery", self.path)
                    removed[name] = len(self.store.remove_person(name))
                self._bump_removals()
            self._after_removal()
        return removed

    def remove_template(self, template_id: int) -> str:
        """Remove one template (its person too if it was their last); returns the person's name."""
        with self._writer():
            with self.store.write():
                name = self.store.remove_template(template_id)
                if name is None:
                    raise GalleryError(f"no template with id {template_id} in the gallery", self.path)
                self._bump_removals()
            self._after_removal()
        return name

    def _bump_removals(self) -> None:
        self.store.set_meta("removals", int(self.store.get_meta("removals", "0") or 0) + 1)

    def _after_removal(self) -> None:
        if self._index is not None or (self.path / INDEX_NAME).exists():
            self._save_index()

    def rebuild(
        self,
        *,
        drop_missing: bool = False,
        index: str | None = None,
        progress: bool = True,
    ) -> RebuildReport:
        """Re-embed every template from its stored source photo with the current recogniser.

        Use it after changing weights (the gallery then records the new fingerprint) or to change the
        index kind. The whole rebuild is one transaction: interrupted, the gallery stays as it was.
        Templates whose photo is gone or changed make it fail, unless ``drop_missing`` removes them.
        """
        from tqdm import tqdm

        from facegnet.io import load_image

        if index is not None and index != "auto" and index not in KINDS:
            raise GalleryError(f"unknown index kind {index!r} (choose from auto, {', '.join(KINDS)})")
        rec = self.recognizer
        with self._writer():
            templates = self.store.templates()
            by_source: dict[str | None, list] = {}
            for t in templates:
                by_source.setdefault(t.source, []).append(t)
            new: dict[int, np.ndarray] = {}
            dropped: list[tuple[int, str, str]] = []
            bar = tqdm(by_source.items(), desc="re-embedding", unit="photo", disable=not progress,
                       dynamic_ncols=True)
            for source, group in bar:
                try:
                    if source is None:
                        raise ImageError("no source photo recorded")
                    path = Path(source)
                    if not path.is_file():
                        raise ImageError("source photo missing", path)
                    sha = sha256_file(path)
                    array = load_image(path)
                    faces = [self._stored_face(t, array, rec) for t in group]
                    embeddings = rec.embed_faces(array, faces)
                except FacegnetError as exc:
                    dropped += [(t.id, str(source), exc.reason) for t in group]
                    continue
                for t, face, emb in zip(group, faces, embeddings):
                    if t.sha256 is not None and t.sha256 != sha:
                        # The file changed since enrolment: a different photo now sits at that path.
                        dropped.append((t.id, str(source), "source photo changed since enrolment"))
                    else:
                        new[t.id] = emb
            bar.close()
            if dropped and not drop_missing:
                first = dropped[0]
                raise GalleryError(
                    f"{len(dropped)} template(s) cannot be re-embedded (first: {first[1]}: {first[2]}); "
                    "restore the photos or rebuild with --drop-missing to remove them",
                    self.path,
                )
            with self.store.write():
                for template_id, emb in new.items():
                    self.store.set_embedding(template_id, emb)
                for template_id, _, _ in dropped:
                    self.store.remove_template(template_id)
                self.store.set_meta("fingerprint", self.card.fingerprint)
                self.store.set_meta("model", self.card.name)
                self.store.set_meta("embedding_size", self.card.embedding_size)
                self.store.set_meta("epoch", uuid.uuid4().hex)
                if index is not None:
                    self.store.set_meta("index_kind", index)
                if dropped:
                    self._bump_removals()
            self._build_index()
            self._save_index()
        assert self._index is not None
        return RebuildReport(len(new), [(s, r) for _, s, r in dropped], self.card.fingerprint, self._index.kind)

    @staticmethod
    def _stored_face(template, array: np.ndarray, rec: FaceRecognizer) -> Face:
        """The enrolled face: from its stored landmarks, or re-detected (best overlap with the stored box)."""
        from facegnet.detect import Face

        if template.landmarks is not None and template.box is not None:
            return Face(np.asarray(template.box, np.float32), float(template.score or 1.0), template.landmarks)
        faces = rec.detect(array)
        if not faces:
            raise NoFaceError("no face found on re-detection")
        if template.box is None:
            return faces[0]
        return max(faces, key=lambda f: _iou(f.box, np.asarray(template.box)))


# ----------------------------------------------------------------------------------------------- helpers
def discover(folder: str | Path) -> list[tuple[str, Path]]:
    """(person name, photo) for every image of an enrolment folder, sorted.

    ``FOLDER/Name/…/photo.jpg`` belongs to ``Name``; ``FOLDER/Name.jpg`` (flat) too. Hidden files and
    files without an image suffix are ignored. Raises DataError for a missing or empty folder.
    """
    folder = Path(folder)
    if not folder.exists():
        raise DataError("folder not found", folder)
    if not folder.is_dir():
        raise DataError("not a folder (enroll takes a folder of people's photos)", folder)
    items: list[tuple[str, Path]] = []
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            for photo in sorted(entry.rglob("*")):
                hidden = any(part.startswith(".") for part in photo.relative_to(entry).parts)
                if photo.is_file() and photo.suffix.lower() in IMAGE_SUFFIXES and not hidden:
                    items.append((entry.name, photo))
        elif entry.is_file() and entry.suffix.lower() in IMAGE_SUFFIXES:
            items.append((_NUMBER_SUFFIX.sub("", entry.stem) or entry.stem, entry))
    if not items:
        raise DataError("no photos found (expected FOLDER/Name/photo.jpg or FOLDER/Name.jpg)", folder)
    return items


def _clean_name(name: str) -> str:
    cleaned = " ".join(str(name).split())
    if not cleaned:
        raise GalleryError("a person's name cannot be empty")
    if cleaned == UNKNOWN:
        raise GalleryError(f"{UNKNOWN!r} is reserved for faces that match no one")
    return cleaned


def _best_per_person(sims: np.ndarray, ids: np.ndarray, names: dict[int, str]) -> list[Candidate]:
    """Candidates, best first, each person once with their best template (results come sorted)."""
    seen: dict[str, Candidate] = {}
    for sim, tid in zip(sims.tolist(), ids.tolist()):
        name = names.get(tid)
        if tid < 0 or name is None or name in seen:
            continue
        seen[name] = Candidate(name, float(sim), int(tid))
    return list(seen.values())


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def open_gallery(path: str | Path = DEFAULT_GALLERY, **kwargs: Any) -> Gallery:
    """Open an existing gallery (same arguments as :class:`Gallery`)."""
    return Gallery(path, **kwargs)


__all__ = [
    "Gallery",
    "Identification",
    "Candidate",
    "EnrollResult",
    "EnrollReport",
    "RebuildReport",
    "QualityPolicy",
    "discover",
    "open_gallery",
    "DEFAULT_GALLERY",
    "UNKNOWN",
]
