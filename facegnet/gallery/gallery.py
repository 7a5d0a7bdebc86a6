"""The :class:`Gallery`: enroll people from photos, identify faces against them, safely shared on disk.

A gallery is a directory (by default ``~/.local/share/facegnet/gallery``, see
:func:`~facegnet.gallery.folders.default_gallery_dir`; ``gallery/README.md`` in the repository documents the
format)::

    gallery.sqlite   people, templates (source photo, its sha256, box, score, quality, landmarks, embedding),
                     and meta (the embedding procedure, the index kind, a change counter) <- source of truth
    index.faiss      the FAISS index of the embeddings                                   <- a cache
    gallery.lock     writers take an exclusive lock on it

or, for servers on several hosts, a PostgreSQL database (``Gallery(database="postgresql://…")``, the same tables
plus photos and tokens, :mod:`facegnet.gallery.pg_store`): each process then keeps its index in memory only, and
brings it in step with every change as PostgreSQL announces it (LISTEN/NOTIFY).

Every enrolment is one SQLite transaction, so a kill at any moment leaves the gallery before or after a whole
photo. The index is verified against SQLite whenever it is used (:mod:`facegnet.gallery.cache`) and topped up
or rebuilt from it, so a stale or damaged index file is harmless. Files are created owner-only.

One ``Gallery`` object may be shared by threads (a web server identifying in several threads while another
enrolls): a lock serialises its use of the database and the index, while detection and embedding run
outside it. Processes (and other ``Gallery`` objects) share a gallery directory through the writer lock
file and SQLite's own locking.

    >>> from facegnet import Gallery
    >>> with Gallery(create=True) as gallery:               # the per-user default gallery
    ...     gallery.enroll_folder("people/")               # people/Alice/1.jpg, people/Bob.jpg, ...
    ...     for match in gallery.identify("group.jpg"):
    ...         print(match.name, match.similarity)
"""
from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from facegnet.card import ModelCard, resolve_card
from facegnet.detection.quality import MIN_FACE_SIZE
from facegnet.errors import GalleryError
from facegnet.gallery.cache import IndexCache
from facegnet.gallery.enrolment import Enrolment
from facegnet.gallery.enrolment_rules import QualityPolicy
from facegnet.gallery.folders import DB_NAME, INDEX_NAME, LOCK_NAME, default_gallery_dir, open_store
from facegnet.gallery.index import KINDS, GalleryIndex, normalise, resolve_kind
from facegnet.gallery.maintenance import Maintenance
from facegnet.gallery.pg_store import is_database_url
from facegnet.gallery.procedure import compose, procedure_of, recorded_procedure, short
from facegnet.gallery.results import Identification
from facegnet.gallery.search import AGGREGATES, rank
from facegnet.gallery.search_threshold import DEFAULT_SEARCH_FAR, SearchThreshold, given_threshold, search_threshold
from facegnet.locking import FileLock, LockTimeout

if TYPE_CHECKING:  # the recogniser pulls in torch: import it only when a model is really needed
    from facegnet.recognizer import FaceRecognizer

class Gallery(Enrolment, Maintenance):
    """A directory of enrolled people that identifies faces.

    Safe to share between threads and processes (see the module docstring); close it once, when no thread
    uses it any more.

    Args:
        path: the gallery directory (default: :func:`~facegnet.gallery.folders.default_gallery_dir`,
            ``$FACEGNET_GALLERY`` or the per-user ``~/.local/share/facegnet/gallery``).
        recognizer: the :class:`~facegnet.recognizer.FaceRecognizer` that detects and embeds; created
            lazily from ``weights`` when needed (listing or removing people needs no model).
        weights: weights for that lazy recogniser (see :func:`facegnet.card.resolve_card`).
        create: create the gallery if it does not exist (otherwise a missing gallery is a GalleryError).
        index: index kind for a new gallery, or to switch an existing one (``auto``, ``flat``, ``pq``,
            ``ivf``, ``hnsw``, ``ivfpq``; see :mod:`facegnet.gallery.index`); None keeps what it records.
        check_fingerprint: refuse a gallery made by another embedding procedure (other weights, flip or not,
            other numerics; see :mod:`facegnet.gallery.procedure`); turn off to list, remove or rebuild.
            Identifying and enrolling check it anyway.
        quality: which faces are good enough to enroll and to be named; by default faces from the
            recogniser's ``min_face_size`` (:data:`facegnet.detection.quality.MIN_FACE_SIZE`) up.
        max_side: enrolment, rebuild and :meth:`identify` decode a photo larger than this many pixels a side
            reduced (a JPEG by the codec itself, :func:`facegnet.io.load_image_reduced`; ``facegnet enroll``,
            ``identify``, ``cluster`` and the server: 2048); None: at full size. Photos no larger are read as they
            are. Faces are reported, and stored, in the photo's own pixels.
        lock_timeout: seconds a writer waits for another writer before giving up.
        database: a PostgreSQL gallery (``postgresql://user@host/db``, :mod:`facegnet.gallery.pg_store`) instead
            of a directory, shared by processes on several hosts; a ``path`` of that form means the same.
    """

    def __init__(
        self,
        path: str | Path | None = None,
        *,
        recognizer: FaceRecognizer | None = None,
        weights: str | Path | None = None,
        create: bool = False,
        index: str | None = None,
        check_fingerprint: bool = True,
        quality: QualityPolicy | None = None,
        max_side: int | None = None,
        lock_timeout: float = 60.0,
        database: str | None = None,
    ) -> None:
        if index is not None and index != "auto" and index not in KINDS:
            raise GalleryError(f"unknown index kind {index!r} (choose from auto, {', '.join(KINDS)})")
        if database is None and isinstance(path, str) and is_database_url(path):
            path, database = None, path
        self.database = database
        self.path: Path | str = Path(path) if path is not None else default_gallery_dir()
        self._recognizer = recognizer
        self._weights = weights
        self.card: ModelCard = recognizer.card if recognizer is not None else resolve_card(weights)
        self.quality = quality or QualityPolicy(
            min_face=recognizer.min_face_size if recognizer is not None else MIN_FACE_SIZE)
        if max_side is not None and int(max_side) < 1:
            raise GalleryError(f"max_side must be a positive number of pixels (or None), not {max_side}")
        self.max_side = None if max_side is None else int(max_side)
        self.lock_timeout = float(lock_timeout)
        #: False-alarm rate per search the default threshold holds (see :meth:`search_threshold`); settable.
        self.search_far = DEFAULT_SEARCH_FAR
        # Lock order, always: the writer lock (file + thread), then the mutex; never the other way round.
        self._mutex = threading.RLock()  # this object's database connection and index
        self._recognizer_lock = threading.Lock()
        initial = lambda: (self.card.fingerprint, self.card.name, self.card.embedding_size,  # noqa: E731
                           index or "auto", self.procedure_in_use)
        if database is not None:  # PostgreSQL: the index lives in memory only and follows the database's changes
            from facegnet.gallery.pg_store import PgWriterLock, open_pg_store, redact

            self.path = redact(database)
            self._writer_lock = PgWriterLock(database)
            self.store = open_pg_store(database, create=create, index=index, writer=self._writer, initial=initial)
            self._cache = IndexCache(self.store, None)
            self.store.listen(self._follow)
        else:
            self._writer_lock = FileLock(self.path / LOCK_NAME)
            self.store = open_store(self.path, create=create, index=index, writer=self._writer, initial=initial)
            self._cache = IndexCache(self.store, self.path / INDEX_NAME)
        if check_fingerprint:
            self.check_fingerprint()

    # ------------------------------------------------------------------------------------------ checks
    def check_fingerprint(self) -> None:
        """Raise GalleryError if the gallery's embeddings were made by another embedding procedure (other
        weights, flip or not, other numerics) than the recogniser's; see :mod:`facegnet.gallery.procedure`."""
        self._check_procedure(self.procedure_in_use)

    def _check_procedure(self, current: str) -> None:
        with self._mutex:
            meta = self.store.meta()
        recorded = recorded_procedure(meta.get("procedure"), meta.get("fingerprint"))
        same_weights = meta.get("fingerprint") == self.card.fingerprint
        if recorded == current and same_weights:
            return
        why = "with another embedding procedure" if same_weights else "with other weights"
        raise GalleryError(
            f"made {why} ({meta.get('model', '?')}, {short(recorded)}) than the current one "
            f"({self.card.name}, {short(current)}); run `facegnet gallery rebuild {self._option}` with the "
            "options you identify with to re-embed it, or use the procedure it was made with",
            self.path,
        )

    @property
    def _option(self) -> str:
        """The command-line option that names this gallery (password left out)."""
        return f"--database {self.path}" if self.database else f"--gallery {self.path}"

    def _follow(self, generation: int) -> None:
        """Another process changed the database: bring a loaded index in step now, not at the next search."""
        with self._mutex:
            if self._cache.loaded:
                self._cache.current()

    @property
    def procedure(self) -> str:
        """The embedding procedure the gallery's templates were made with."""
        with self._mutex:
            meta = self.store.meta()
        return recorded_procedure(meta.get("procedure"), meta.get("fingerprint"))

    @property
    def procedure_in_use(self) -> str:
        """The procedure of the recogniser (or, before one is created, of the default one for ``weights``)."""
        if self._recognizer is not None:
            return procedure_of(self._recognizer)
        return compose(self.card.fingerprint)

    @property
    def recognizer(self) -> FaceRecognizer:
        """The recogniser, created on first use from the ``weights`` given to the gallery."""
        with self._recognizer_lock:
            if self._recognizer is None:
                from facegnet.recognizer import FaceRecognizer

                self._recognizer = FaceRecognizer(self._weights)
            return self._recognizer

    @property
    def threshold(self) -> float:
        """Default open-set threshold (see :meth:`search_threshold`)."""
        return self.search_threshold().threshold

    def search_threshold(self, people: int | None = None, templates: int | None = None) -> SearchThreshold:
        """The open-set threshold in force, with the false-alarm rate per search it holds and why.

        A threshold given to the recogniser wins (the rate it holds is then predicted); else, when the model
        card describes its impostor scores' tail, the threshold at which a stranger's search against the
        gallery's ``people`` and their ``templates`` (default: as many as are enrolled now; a search compares
        the stranger with every template) names somebody with probability :attr:`search_far`
        (:mod:`facegnet.gallery.search_threshold`): it rises as photos are added. Cards without a tail give
        their fixed identification threshold (:attr:`ModelCard.open_set_threshold`).
        """
        if people is None:
            with self._mutex:
                people, templates = self.store.count()
        tail = self.card.impostor_tail
        if self._recognizer is not None and self._recognizer.threshold_given:
            return given_threshold(tail, people, float(self._recognizer.threshold), "given", templates)
        if tail:
            return search_threshold(tail, people, self.search_far, templates)
        return given_threshold(None, people, self.card.open_set_threshold, "card", templates)

    @property
    def fingerprint(self) -> str:
        with self._mutex:
            return self.store.get_meta("fingerprint") or ""

    def close(self) -> None:
        """Save the index if it changed (when no other writer holds the gallery) and close the database."""
        try:
            with self._writer(timeout=0.0), self._mutex:
                if self._cache.dirty and self._cache.loaded:
                    self._cache.save()
        except GalleryError:
            pass  # another writer is busy: the next open tops the index up from SQLite
        with self._mutex:
            self.store.close()
        self._writer_lock.close()

    def __enter__(self) -> "Gallery":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------------------------------ locking
    @contextmanager
    def _writer(self, timeout: float | None = None) -> Iterator[None]:
        """Exclusive writer lock on ``gallery.lock``: one writer among processes and threads; re-entrant
        within a thread. Take it before the mutex, never while holding it."""
        try:
            self._writer_lock.acquire(self.lock_timeout if timeout is None else timeout)
        except LockTimeout as exc:
            raise GalleryError(f"busy: another writer (pid {exc.holder}) is writing to it; try again later",
                               self.path) from None
        try:
            yield
        finally:
            self._writer_lock.release()

    # ------------------------------------------------------------------------------------------ the index
    @property
    def index(self) -> GalleryIndex:
        """The FAISS index, loaded or built on first use and kept in step with SQLite."""
        with self._mutex:
            return self._cache.current()

    def save(self) -> None:
        """Write the index file now (it is also written after enroll_folder, remove, rebuild and close)."""
        with self._writer(), self._mutex:
            self._cache.save()

    def verify_consistency(self) -> dict[str, Any]:
        """Compare SQLite with the index: template ids in each, and whether they agree."""
        with self._mutex:
            return self._cache.consistency()

    def _dim(self) -> int:
        return self._cache.dim()

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

        Faces smaller than ``quality.min_face`` are left out: too small to name (as to verify or enroll). A photo
        larger than ``max_side`` pixels a side is decoded reduced; its faces come back in the photo's own pixels.

        Args:
            top_k: candidates listed for each face.
            threshold: open-set threshold (default: :meth:`search_threshold`, for the gallery's size).
            aggregate: score a person by the ``max`` of their templates' similarities (default) or the ``mean``.
        """
        from facegnet.io import load_image_reduced

        decoded = load_image_reduced(image, self.max_side)  # a big photo never at full size
        matches = self.identify_many([decoded.array], top_k=top_k, threshold=threshold, aggregate=aggregate)[0]
        return [match.in_photo(decoded.scale) for match in matches]

    def identify_many(
        self,
        images: Sequence[np.ndarray],
        *,
        top_k: int = 1,
        threshold: float | None = None,
        aggregate: str = "max",
    ) -> list[list[Identification]]:
        """:meth:`identify` for several decoded RGB photos at once (one list per photo): MTCNN runs photos of a
        size together, and every face of them is embedded in one batch and searched together."""
        self._check_procedure(procedure_of(self.recognizer))
        floor = self.quality.min_face
        faces = [[face for face in found if face.size >= floor]
                 for found in self.recognizer.detect_batch(list(images), floor)]
        # Outside the lock: other threads search meanwhile.
        embeddings = self.recognizer.embed_face_list([(array, face) for array, found in zip(images, faces)
                                                      for face in found])
        matches = self.search(embeddings, top_k=top_k, threshold=threshold, aggregate=aggregate)
        out, start = [], 0
        for found in faces:
            mine = matches[start : start + len(found)]
            start += len(found)
            for face, match in zip(found, mine):
                match.face = face
            out.append(mine)
        return out

    def search(
        self,
        embeddings: np.ndarray,
        *,
        top_k: int = 1,
        threshold: float | None = None,
        aggregate: str = "max",
    ) -> list[Identification]:
        """Identify embeddings (one per row) made by this gallery's embedding procedure (the caller's
        responsibility: raw vectors carry no procedure). See :meth:`identify`."""
        if aggregate not in AGGREGATES:
            raise GalleryError(f"aggregate must be one of {', '.join(AGGREGATES)}, not {aggregate!r}")
        threshold = self.threshold if threshold is None else float(threshold)
        top_k = max(1, int(top_k))
        queries = normalise(np.asarray(embeddings, np.float32).reshape(-1, self._dim()))
        if not len(queries):
            return []
        with self._mutex:
            index = self._cache.current()
            if len(index) == 0:
                raise GalleryError("the gallery is empty: enroll people first", self.path)
            return rank(index, self.store, queries, top_k=top_k, threshold=threshold, aggregate=aggregate)

    # ------------------------------------------------------------------------------------------ housekeeping
    def __len__(self) -> int:
        """Number of templates."""
        with self._mutex:
            return self.store.count()[1]

    def people(self) -> list[tuple[str, int]]:
        """(name, number of templates) of every enrolled person, by name."""
        with self._mutex:
            return [(p.name, p.templates) for p in self.store.people()]

    def templates(self, name: str | None = None):
        """The stored templates (without embeddings) of one person or of everyone."""
        with self._mutex:
            return self.store.templates(name)

    def info(self) -> dict[str, Any]:
        """A summary: location, counts, model, index, threshold, sizes on disk."""
        with self._mutex:
            meta = self.store.meta()
            people, templates = self.store.count()
        in_force = self.search_threshold(people, templates)
        local = isinstance(self.path, Path)
        files = {name: (self.path / name) for name in (DB_NAME, INDEX_NAME)} if local else {}
        kind = meta.get("index_kind", "auto")
        return {
            "path": str(self.path.resolve()) if local else str(self.path),
            "people": people,
            "templates": templates,
            "model": meta.get("model"),
            "fingerprint": meta.get("fingerprint"),
            "fingerprint_matches": meta.get("fingerprint") == self.card.fingerprint,
            "procedure": recorded_procedure(meta.get("procedure"), meta.get("fingerprint")),
            "current_model": self.card.name,
            "embedding_size": int(meta.get("embedding_size", 512)),
            "index_kind": kind,
            "index_in_use": resolve_kind(kind, templates)[0],
            "threshold": in_force.threshold,
            "search_threshold": in_force.to_dict(),
            "created": float(meta.get("created", 0)),
            "bytes": {name: p.stat().st_size for name, p in files.items() if p.exists()},
        }


def open_gallery(path: str | Path | None = None, **kwargs: Any) -> Gallery:
    """Open an existing gallery (same arguments as :class:`Gallery`)."""
    return Gallery(path, **kwargs)


__all__ = ["Gallery", "open_gallery"]
