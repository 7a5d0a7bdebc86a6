"""The one place where the server touches the recogniser and the gallery.

Requests run on a thread pool; :attr:`GalleryService.lock` lets one of them at a time use the recogniser, the
gallery and the camera sessions. On a CPU the networks already use every core for one photo, so running two
at once would only make both slower, and one lock keeps each camera session's tracking state whole. Between
processes (several uvicorn workers, or a CLI beside the server) the gallery's own writer lock and its index
check keep one gallery on disk consistent.

A request either does all it says or writes nothing: an enrolment of several photos that fails on one removes
what it had added before answering with the error.
"""
from __future__ import annotations

import io
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from facegnet.errors import FacegnetError, GalleryError, NoFaceError
from facegnet.gallery import Gallery, QualityPolicy
from facegnet.io import load_image
from facegnet.recognizer import VerifyResult, cosine_similarity
from facegnet.server.errors import ApiError
from facegnet.server.people import PhotoStore, clean_name
from facegnet.server.uploads import Upload, decode, relabel

THUMBNAIL_SIDE = 128


class GalleryService:
    """Recogniser + gallery + photo store behind one lock.

    Args:
        gallery_dir: the gallery directory (created if missing).
        recognizer: a :class:`~facegnet.recognizer.FaceRecognizer`.
        threshold: open-set threshold for identify (default: the gallery's, from the model card).
        quality: which enrolment faces are good enough (default: the gallery's 40 px, score 0.95).
    """

    def __init__(self, gallery_dir: str | Path, recognizer: Any, *, threshold: float | None = None,
                 quality: QualityPolicy | None = None) -> None:
        self.path = Path(gallery_dir)
        self.recognizer = recognizer
        self.threshold = threshold
        self.lock = threading.RLock()
        self.gallery = Gallery(self.path, recognizer=recognizer, create=True, quality=quality)
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
        info["threshold"] = self.threshold if self.threshold is not None else info["threshold"]
        info.pop("path", None)  # the client needs no server paths
        return info

    def thumbnail(self, name: str, template_id: int) -> bytes:
        """A JPEG of one template's face, cut from its source photo."""
        cached = self._thumbnails.get(template_id)
        if cached is not None and cached[0] == name:
            return cached[1]
        with self.lock:
            template = next((t for t in self.gallery.templates(name) if t.id == template_id), None)
        if template is None:
            raise ApiError(404, f"{name!r} has no template {template_id}")
        if not template.source or not Path(template.source).is_file():
            raise ApiError(404, f"the photo of template {template_id} is not on disk")
        data = face_jpeg(load_image(template.source), template.box)
        with self.lock:
            self._thumbnails[template_id] = (name, data)
            while len(self._thumbnails) > 512:
                self._thumbnails.popitem(last=False)
        return data

    # ------------------------------------------------------------------------------------------ recognition
    def identify(self, upload: Upload, top_k: int = 1) -> dict[str, Any]:
        """Every face of the photo with its best person: the shape of ``facegnet identify --json``."""
        array = decode(upload)
        with self.lock:
            try:
                matches = self.gallery.identify(array, top_k=top_k, threshold=self.threshold)
            except FacegnetError as exc:
                raise _named(exc, upload.name) from None
        if not matches:
            raise NoFaceError("no face found", upload.name)
        height, width = array.shape[:2]
        return {"image": upload.name, "width": width, "height": height, "faces": [m.to_dict() for m in matches]}

    def verify(self, a: Upload, b: Upload) -> dict[str, Any]:
        """Are the largest faces of the two photos the same person? The ``facegnet verify --json`` object."""
        arrays = [decode(a), decode(b)]
        embedded = []
        with self.lock:
            for upload, array in zip((a, b), arrays):
                try:
                    embedded.append(self.recognizer.embed_largest(array))
                except FacegnetError as exc:
                    raise relabel(exc, upload.name) from None
        (emb_a, face_a, n_a), (emb_b, face_b, n_b) = embedded
        similarity = cosine_similarity(emb_a, emb_b)
        threshold = float(self.recognizer.threshold)
        notes = [f"{u.name} holds {n} faces; the largest was used" for u, n in ((a, n_a), (b, n_b)) if n > 1]
        result = VerifyResult(similarity, similarity >= threshold, threshold, face_a, face_b, n_a, n_b, notes)
        return result.to_dict()

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
                decode(upload)
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
                                      "warning": result.warning})
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
