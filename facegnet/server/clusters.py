"""Clusters of unsorted photos on the page: upload a folder's photos, get groups of faces to name.

A job (the photos, their faces and groups, and what was done with each) lives where the gallery keeps its cluster
jobs (:mod:`facegnet.gallery.cluster_jobs`): ``<gallery>/clusters/<id>/`` for a gallery directory, so that every
worker process of a server sees it, or the database of a PostgreSQL gallery, so that every server of the gallery
does. Naming a group enrolls each of its faces (a crop around the face, kept in the gallery's photo store)
through :meth:`GalleryService.enroll`; merging joins groups; dismissing hides one. Each group notes the enrolled
person most of its faces look like (``known``), for the page to offer.
"""
from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from PIL import Image

from facegnet.cluster import cluster_faces, find_faces
from facegnet.errors import FacegnetError, NoFaceError
from facegnet.gallery.cluster_jobs import (
    NoSuchJob,
    known_people,
    new_job,
    open_job_store,
    photo_files,
    valid_id,
)
from facegnet.io import DEFAULT_MAX_SIDE, load_image_reduced
from facegnet.server.errors import ApiError
from facegnet.server.service import GalleryService, photo_face_jpeg
from facegnet.server.uploads import Upload, decode


class ClusterJobs:
    """Cluster jobs of one gallery, kept where the gallery keeps them (its directory or its database)."""

    def __init__(self, service: GalleryService, method: str = "average", threshold: float | None = None) -> None:
        self.service = service
        self.store = open_job_store(service.path, service.gallery.database)
        self.method = method
        self.threshold = threshold

    def close(self) -> None:
        self.store.close()

    # ------------------------------------------------------------------------------------------ jobs
    def create(self, uploads: list[Upload]) -> dict[str, Any]:
        """Find and group the faces of these photos; a photo that is not one is listed, not fatal."""
        arrays, names, errors, scales = [], [], [], {}
        uploads = _unique_names(uploads)
        for upload in uploads:
            try:
                decoded = decode(upload, self.service.max_side)
                arrays.append(decoded.array)
                names.append(upload.name)
                scales[upload.name] = decoded.scale
            except FacegnetError as exc:
                errors.append((upload.name, exc.reason))
        rec = self.service.recognizer
        with self.service.lock:  # the recogniser is shared with every other request
            faces, embeddings, more = find_faces(rec, arrays, names=names) if arrays else ([], None, [])
        errors += more
        if not faces:
            first = f" (first: {errors[0][0]}: {errors[0][1]})" if errors else ""
            raise NoFaceError(f"no usable face in any of the {len(uploads)} photo(s){first}")
        threshold = rec.threshold if self.threshold is None else self.threshold
        result = cluster_faces(faces, embeddings, errors, method=self.method, threshold=threshold)
        by_name = {u.name: u for u in uploads}
        files = photo_files(result, {name: upload.suffix for name, upload in by_name.items()})
        job = new_job(result, len(uploads), files, scales, known=known_people(self.service.gallery, result))
        self.store.add(job, {files[name]: by_name[name].data for name in files})
        return job

    def list(self) -> list[dict[str, Any]]:
        return self.store.list()

    def get(self, job_id: str) -> dict[str, Any]:
        with self._found(job_id):
            return self.store.get(job_id)

    def delete(self, job_id: str) -> dict[str, Any]:
        with self._found(job_id):
            self.store.delete(job_id)
        return {"deleted": job_id}

    def thumbnail(self, job_id: str, face: int) -> bytes:
        job = self.get(job_id)
        if not 0 <= face < len(job["faces"]):
            raise ApiError(404, f"cluster job {job_id} has no face {face}")
        record = job["faces"][face]
        with self._found(job_id):
            photo = self.store.photo(job_id, record["photo"])
        return photo_face_jpeg(photo, record["box"], self.service.max_side)

    # ------------------------------------------------------------------------------------------ groups
    def name(self, job_id: str, group: int, name: str) -> dict[str, Any]:
        """Enroll every face of a group as ``name`` (faces the gallery finds unusable are skipped)."""
        with self._job(job_id) as job:
            entry = _group(job, group)
            uploads = []
            for face in entry["faces"]:
                record = job["faces"][face]
                with self._found(job_id):
                    photo = self.store.photo(job_id, record["photo"])
                data = face_crop(photo, record["box"], max_side=self.service.max_side)
                uploads.append(Upload(f"{record['name']} (face {face})", data))
            report = self.service.enroll(name, uploads, skip_bad=True)
            entry["state"], entry["name"] = "named", report["name"]
        return {"group": group, **report}

    def merge(self, job_id: str, groups: list[int]) -> dict[str, Any]:
        """Join groups into the first one."""
        if len(set(groups)) < 2:
            raise ApiError(422, "give at least two different groups to merge")
        with self._job(job_id) as job:
            entries = [_group(job, g) for g in groups]
            for entry in entries[1:]:
                entries[0]["faces"] = sorted(entries[0]["faces"] + entry["faces"])
                entry["faces"], entry["state"] = [], "merged"
        return {"group": groups[0], "faces": entries[0]["faces"]}

    def dismiss(self, job_id: str, group: int) -> dict[str, Any]:
        with self._job(job_id) as job:
            _group(job, group)["state"] = "dismissed"
        return {"group": group, "state": "dismissed"}

    # ------------------------------------------------------------------------------------------ storage
    @contextmanager
    def _found(self, job_id: str) -> Iterator[None]:
        """A job (or photo) the store does not hold is a 404 naming the job."""
        if not valid_id(job_id):
            raise ApiError(404, f"no cluster job {job_id!r}")
        try:
            yield
        except NoSuchJob:
            raise ApiError(404, f"no cluster job {job_id!r}") from None

    @contextmanager
    def _job(self, job_id: str) -> Iterator[dict[str, Any]]:
        """The job's state, locked against every other process's change to it; saved when the block ends, dropped
        when it raises."""
        with self._found(job_id), self.store.update(job_id) as job:
            yield job


def _unique_names(uploads: list[Upload]) -> list[Upload]:
    """Two photos called the same (from two folders) keep apart: the second becomes 'name (2)'."""
    seen: dict[str, int] = {}
    out = []
    for upload in uploads:
        count = seen[upload.name] = seen.get(upload.name, 0) + 1
        out.append(upload if count == 1 else Upload(f"{upload.name} ({count})", upload.data))
    return out


def _group(job: dict[str, Any], group: int) -> dict[str, Any]:
    if not 0 <= group < len(job["groups"]) or job["groups"][group]["state"] == "merged":
        raise ApiError(404, f"cluster job {job['id']} has no group {group}")
    return job["groups"][group]


def face_crop(photo: str | Path | bytes, box: list[float], context: float = 1.0,
              max_side: int | None = DEFAULT_MAX_SIDE) -> bytes:
    """A JPEG of the face with ``context`` face sizes around it: enrolment re-detects it as the largest face.

    ``photo``: a path or a file's bytes; ``box`` is in the photo's own pixels; a big photo is decoded reduced (the
    crop with it)."""
    decoded = load_image_reduced(photo, max_side)
    image = Image.fromarray(decoded.array)
    sx, sy = decoded.scale
    x1, y1, x2, y2 = box[0] / sx, box[1] / sy, box[2] / sx, box[3] / sy
    half = max(x2 - x1, y2 - y1) * (0.5 + context)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    crop = image.crop((max(0, int(cx - half)), max(0, int(cy - half)),
                       min(image.width, int(cx + half)), min(image.height, int(cy + half))))
    out = io.BytesIO()
    crop.save(out, format="JPEG", quality=95)
    return out.getvalue()


