"""The one place where the server touches the recogniser and the gallery.

Requests run on a thread pool. Changes (enrolment, renames, removals), camera sessions and clusters take
:attr:`GalleryService.lock`, one at a time, which keeps each camera session's tracking state whole.
Recognition (identify, verify) runs up to ``concurrency`` requests at once beside them: the recogniser and the
gallery's search are safe to share between threads, and with several worker processes the connections of the
clients are seldom spread evenly over them, so a worker that runs its requests one at a time would make its
clients wait several times longer than the others' (p99 far above p50) while the operating system could share
the cores fairly between every request in flight. The first recognition runs alone (it loads the networks).
Between processes (several uvicorn workers, or a CLI beside the server) the gallery's own writer lock and its
index check keep one gallery on disk consistent.

A request either does all it says or writes nothing: an enrolment of several photos that fails on one removes
what it had added before answering with the error.
"""
from __future__ import annotations

import dataclasses
import io
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from facegnet.align import rounded_share
from facegnet.detection.quality import cut_tight, tight_notes
from facegnet.errors import FacegnetError, GalleryError, NoFaceError
from facegnet.gallery import UNKNOWN, Gallery, Identification, QualityPolicy
from facegnet.gallery.search_threshold import SearchThreshold, given_threshold
from facegnet.io import DEFAULT_MAX_SIDE, load_image_reduced
from facegnet.recognizer import VerifyResult, cosine_similarity
from facegnet.server.errors import ApiError
from facegnet.server.people import PhotoStore, clean_name
from facegnet.server.uploads import Upload, decode, in_photo, relabel

THUMBNAIL_SIDE = 128

#: Recognition requests one process runs at once by default (see the module's docstring).
RECOGNITIONS_AT_ONCE = 4


class GalleryService:
    """Recogniser + gallery + photo store behind one lock.

    Args:
        gallery_dir: the gallery directory (created if missing).
        recognizer: a :class:`~facegnet.recognizer.FaceRecognizer`.
        threshold: open-set threshold for identify (default: the gallery's, from the model card).
        quality: which enrolment faces are good enough (default: the gallery's 40 px, score 0.95).
        max_side: photos larger than this many pixels a side are decoded reduced before detection (and enrolment).
        database: a PostgreSQL gallery (``postgresql://…``) instead of ``gallery_dir``, which then only holds this
            server's working files (local copies of photos; cluster jobs live in the database).
        concurrency: identify/verify requests run at once (1: one at a time).
    """

    def __init__(self, gallery_dir: str | Path, recognizer: Any, *, threshold: float | None = None,
                 quality: QualityPolicy | None = None, max_side: int | None = DEFAULT_MAX_SIDE,
                 database: str | None = None, concurrency: int = RECOGNITIONS_AT_ONCE) -> None:
        self.path = Path(gallery_dir)
        self._recognitions = threading.BoundedSemaphore(max(1, int(concurrency)))
        self._warm = False
        self.max_side = max_side
        self.recognizer = recognizer
        self.threshold = threshold
        self.lock = threading.RLock()
        self.gallery = Gallery(self.path, recognizer=recognizer, create=True, quality=quality, database=database,
                               max_side=max_side)  # enrolment decodes big photos reduced, as identify does
        if database is not None:
            from facegnet.server.db_photos import DatabasePhotos

            self.photos: PhotoStore = DatabasePhotos(self.path, database)
        else:
            self.photos = PhotoStore(self.path)
        self._thumbnails: OrderedDict[int, tuple[str, bytes]] = OrderedDict()  # id → (person, JPEG)

    def close(self) -> None:
        with self.lock:
            self.gallery.close()

    # ------------------------------------------------------------------------------------------ reading
    def people(self) -> list[dict[str, Any]]:
        with self.lock:
            return [{"name": name, "templates": count} for name, count in self.gallery.people()]

    def person(self, name: str) -> dict[str, Any]:
        with self.lock:
            templates = self.gallery.templates(name)
        if not templates:
            raise ApiError(404, f"no person named {name!r} in the gallery")
        return {"name": name, "templates": [_template_dict(t) for t in templates]}

    def info(self) -> dict[str, Any]:
        with self.lock:
            info = self.gallery.info()
        in_force = self.threshold_in_force()
        info["threshold"], info["search_threshold"] = in_force.threshold, in_force.to_dict()
        info.pop("path", None)  # the client needs no server paths
        return info

    def threshold_in_force(self) -> SearchThreshold:
        """The open-set threshold identify uses now, with the false-alarm rate per search it holds: the server's
        ``--threshold`` when given, else the gallery's own (chosen for its number of templates)."""
        in_force = self.gallery.search_threshold()
        if self.threshold is None:
            return in_force
        return given_threshold(self.gallery.card.impostor_tail, in_force.people, self.threshold, "given",
                               in_force.templates)

    def thumbnail(self, name: str, template_id: int) -> bytes:
        """A JPEG of one template's face, cut from its source photo."""
        cached = self._thumbnails.get(template_id)
        if cached is not None and cached[0] == name:
            return cached[1]
        with self.lock:
            template = next((t for t in self.gallery.templates(name) if t.id == template_id), None)
        if template is None:
            raise ApiError(404, f"{name!r} has no template {template_id}")
        source = template.source
        if not source or not Path(source).is_file():
            source = self.photos.fetch(template.sha256)  # a photo another server stored, from the database
        if not source:
            raise ApiError(404, f"the photo of template {template_id} is not on disk")
        data = photo_face_jpeg(source, template.box, self.max_side)
        with self.lock:
            self._thumbnails[template_id] = (name, data)
            while len(self._thumbnails) > 512:
                self._thumbnails.popitem(last=False)
        return data

    # ------------------------------------------------------------------------------------------ recognition
    def identify(self, upload: Upload, top_k: int = 1) -> dict[str, Any]:
        """Every face of the photo with its best person: the shape of ``facegnet identify --json``."""
        decoded = decode(upload, self.max_side)  # outside the lock: a big photo does not hold up the others
        with self.recognition():
            try:
                matches = self.gallery.identify(decoded.array, top_k=top_k, threshold=self.threshold)
            except FacegnetError as exc:
                raise _named(exc, upload.name) from None
        if not matches:
            raise NoFaceError("no face found", upload.name)
        faces = [dataclasses.replace(m, face=in_photo(m.face, decoded)).to_dict() for m in matches]
        return {"image": upload.name, "width": decoded.width, "height": decoded.height, "faces": faces,
                "warnings": tight_notes([m.face for m in matches])}

    def recognize(self, upload: Upload, top_k: int = 1) -> tuple[tuple[int, int], list[Identification]]:
        """The photo's (height, width) and every face's :class:`Identification` (face, candidates, threshold in
        force): the material of the CompreFace- and DeepStack-compatible answers. An empty gallery is not an
        error here: each face comes back with no candidates, as those services answer."""
        decoded = decode(upload, self.max_side)
        with self.recognition():
            try:
                if len(self.gallery):
                    matches = self.gallery.identify(decoded.array, top_k=top_k, threshold=self.threshold)
                else:
                    floor = self.gallery.quality.min_face
                    threshold = self.gallery.threshold if self.threshold is None else self.threshold
                    matches = [Identification(UNKNOWN, float("-inf"), threshold, [], face=face)
                               for face in self.recognizer.detect(decoded.array) if face.size >= floor]
            except FacegnetError as exc:
                raise _named(exc, upload.name) from None
        matches = [dataclasses.replace(m, face=in_photo(m.face, decoded)) for m in matches]
        return (decoded.height, decoded.width), matches

    def verify(self, a: Upload, b: Upload) -> dict[str, Any]:
        """Are the largest faces of the two photos the same person? The ``facegnet verify --json`` object."""
        photos = [decode(a, self.max_side), decode(b, self.max_side)]
        embedded = []
        with self.recognition():
            for upload, decoded in zip((a, b), photos):
                try:
                    embedding, face, count = self.recognizer.embed_largest(decoded.array)
                except FacegnetError as exc:
                    raise relabel(exc, upload.name) from None
                embedded.append((embedding, in_photo(face, decoded), count))
        (emb_a, face_a, n_a), (emb_b, face_b, n_b) = embedded
        similarity = cosine_similarity(emb_a, emb_b)
        threshold = float(self.recognizer.threshold)
        notes = [f"{u.name} holds {n} faces; the largest was used" for u, n in ((a, n_a), (b, n_b)) if n > 1]
        notes += [f"{u.name}: face is {why}" for u, face in ((a, face_a), (b, face_b))
                  if (why := cut_tight(face)) is not None]
        result = VerifyResult(similarity, similarity >= threshold, threshold, face_a, face_b, n_a, n_b, notes)
        return result.to_dict()

    @contextmanager
    def recognition(self) -> Iterator[None]:
        """A turn to recognise: one of ``concurrency`` at once; the very first alone (it loads the networks)."""
        with self._recognitions:
            if self._warm:
                yield
                return
            with self.lock:
                yield
                self._warm = True

    # ------------------------------------------------------------------------------------------ changes
    def enroll(self, name: str, uploads: list[Upload], *, skip_bad: bool = False) -> dict[str, Any]:
        """Enroll the largest face of each photo as ``name``.

        By default all photos or none: the first bad photo's error is raised and what this call had added is
        removed again. With ``skip_bad`` (naming a cluster's faces) a photo without a usable face is listed
        in ``skipped`` with its reason instead; if none is usable, NoFaceError and nothing is written.
        """
        name = clean_name(name)
        if not skip_bad:
            for upload in uploads:  # every photo decodes before anything is written
                decode(upload, self.max_side)
        added: list[dict[str, Any]] = []
        existing: list[dict[str, Any]] = []
        skipped: list[dict[str, Any]] = []
        written: list[Path] = []
        with self.lock:
            try:
                for upload in uploads:
                    path, created = self.photos.put(upload)
                    try:
                        result = self.gallery.enroll(name, path)
                    except FacegnetError as exc:
                        if created and not self._in_use(path):
                            self.photos.discard(str(path))
                        if skip_bad and not isinstance(exc, GalleryError):
                            skipped.append({"file": upload.name, "reason": exc.reason})
                            continue
                        raise _named(exc, upload.name) from None
                    if result.status == "enrolled":
                        if created:
                            written.append(path)
                        added.append({"file": upload.name, "template": result.template_id, "faces": result.faces,
                                      "warning": result.warning, "outside": rounded_share(result.outside)})
                    else:  # this photo is in the gallery already (perhaps as someone else)
                        existing.append({"file": upload.name, "template": result.template_id,
                                         "name": result.name})
                        if created and not self._in_use(path, result.name):  # held under another path
                            self.photos.discard(str(path))
                if skip_bad and skipped and not added and not existing:
                    first = skipped[0]
                    raise NoFaceError(f"no usable face in any of the {len(skipped)} photo(s) (first: "
                                      f"{first['reason']})", first["file"])
            except BaseException:
                for item in added:  # undo this request's templates, then its photos
                    self.gallery.remove_template(item["template"])
                for path in written:
                    self.photos.discard(str(path))
                raise
        return {"name": name, "added": added, "existing": existing, "skipped": skipped}

    def _in_use(self, path: Path, name: str | None = None) -> bool:
        """Is this stored photo the source of a template (another process may have enrolled it meanwhile)?"""
        source = str(Path(path).resolve())
        return any(t.source == source for t in self.gallery.templates(name))

    def rename(self, name: str, new_name: str) -> dict[str, Any]:
        new_name = clean_name(new_name)
        with self.lock:
            self._must_exist(name)
            self.gallery.rename_person(name, new_name)  # GalleryError (409) when the new name is taken
        return {"name": new_name, "previous": name}

    def merge(self, name: str, into: str) -> dict[str, Any]:
        into = clean_name(into)
        if name == into:
            raise ApiError(422, "cannot merge a person into themselves")
        with self.lock:
            self._must_exist(name, into)
            moved = self.gallery.merge_people(name, into)
        return {"name": into, "merged": name, "templates_moved": moved}

    def _must_exist(self, *names: str) -> None:
        """ApiError 404 for a person who is not in the gallery (call holding the lock)."""
        known = {person for person, _ in self.gallery.people()}
        for name in names:
            if name not in known:
                raise ApiError(404, f"no person named {name!r} in the gallery")

    def remove_person(self, name: str) -> dict[str, Any]:
        with self.lock:
            templates = self.gallery.templates(name)
            if not templates:
                raise ApiError(404, f"no person named {name!r} in the gallery")
            removed = self.gallery.remove_person(name)
            for template in templates:
                self.photos.discard(template.source)
                self._thumbnails.pop(template.id, None)
        return {"removed": name, "templates": removed}

    def remove_template(self, name: str, template_id: int) -> dict[str, Any]:
        with self.lock:
            template = next((t for t in self.gallery.templates(name) if t.id == template_id), None)
            if template is None:
                raise ApiError(404, f"{name!r} has no template {template_id}")
            self.gallery.remove_template(template_id)
            self.photos.discard(template.source)
            self._thumbnails.pop(template_id, None)
        return {"removed": template_id, "name": name}


def _named(exc: FacegnetError, upload_name: str) -> FacegnetError:
    """The error naming the upload; a gallery error names nothing (the server's paths are its own)."""
    if isinstance(exc, GalleryError):
        return type(exc)(exc.reason)
    return relabel(exc, upload_name)


def _template_dict(template) -> dict[str, Any]:
    return {
        "id": template.id,
        "photo": Path(template.source).name if template.source else None,
        "box": None if template.box is None else [round(float(v), 1) for v in template.box],
        "quality": None if template.quality is None else round(float(template.quality), 3),
        "created": template.created,
    }


def photo_face_jpeg(photo: str | Path | bytes, box, max_side: int | None = DEFAULT_MAX_SIDE) -> bytes:
    """:func:`face_jpeg` of a stored photo (a path or its bytes), decoded at most ``max_side`` a side (``box`` in
    its own pixels)."""
    decoded = load_image_reduced(photo, max_side)
    if box is not None and decoded.reduced:
        sx, sy = decoded.scale
        box = [float(box[0]) / sx, float(box[1]) / sy, float(box[2]) / sx, float(box[3]) / sy]
    return face_jpeg(decoded.array, box)


def face_jpeg(array: np.ndarray, box, side: int = THUMBNAIL_SIDE, margin: float = 0.25) -> bytes:
    """A square JPEG of the face in ``box`` (with a margin around it), or of the whole photo without a box."""
    image = Image.fromarray(array)
    if box is not None:
        x1, y1, x2, y2 = (float(v) for v in box)
        half = max(x2 - x1, y2 - y1) * (0.5 + margin)
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        image = image.crop((int(cx - half), int(cy - half), int(cx + half), int(cy + half)))
    image.thumbnail((side, side))
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=85)
    return out.getvalue()
