"""Clusters of unsorted photos on the page: upload a folder's photos, get groups of faces to name.

A job lives in ``<gallery>/clusters/<id>/`` (owner-only, like the gallery: these are faces): the photos and
``job.json`` (faces, groups and what was done with each). On disk rather than in memory so that every worker
process of a server sees it. Naming a group enrolls each of its faces (a crop around the face, kept in the
gallery's photo store) through :meth:`GalleryService.enroll`; merging joins groups; dismissing hides one.
"""
from __future__ import annotations

import fcntl
import io
import json
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from PIL import Image

from facegnet.atomic import write_text
from facegnet.cluster import cluster_faces, find_faces
from facegnet.errors import FacegnetError, NoFaceError
from facegnet.io import DEFAULT_MAX_SIDE, load_image_reduced
from facegnet.server.errors import ApiError
from facegnet.server.service import GalleryService, photo_face_jpeg
from facegnet.server.uploads import Upload, decode

CLUSTERS_DIR = "clusters"
JOB_FILE = "job.json"


class ClusterJobs:
    """Cluster jobs of one gallery."""

    def __init__(self, service: GalleryService, method: str = "average", threshold: float | None = None) -> None:
        self.service = service
        self.root = service.path / CLUSTERS_DIR
        self.method = method
        self.threshold = threshold

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
        job_id = uuid.uuid4().hex[:12]
        folder = self.root / job_id
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        folder.mkdir(mode=0o700)
        try:
            stored = {}
            by_name = {u.name: u for u in uploads}
            for n, name in enumerate(dict.fromkeys(f.source for f in faces)):
                filename = f"{n:04d}{by_name[name].suffix}"
                _write_private(folder / filename, by_name[name].data)
                stored[name] = filename
            job = {
                "id": job_id,
                "created": time.time(),
                "method": result.method,
                "threshold": result.threshold,
                "photos": len(uploads),
                "faces": [{"photo": stored[f.source], "name": f.source,
                           "box": _in_photo(f.box, scales[f.source]),
                           "score": round(f.score, 4)} for f in faces],
                "groups": [{"id": g, "faces": members, "state": "open", "name": None}
                           for g, members in enumerate(result.groups())],
                "errors": [{"image": s, "error": r} for s, r in errors],
            }
            _write_json(folder / JOB_FILE, job)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return job

    def list(self) -> list[dict[str, Any]]:
        out = []
        if self.root.is_dir():
            for folder in sorted(self.root.iterdir()):
                try:
                    job = json.loads((folder / JOB_FILE).read_text())
                except (OSError, ValueError):
                    continue
                out.append({"id": job["id"], "created": job["created"], "faces": len(job["faces"]),
                            "groups": sum(g["state"] == "open" for g in job["groups"])})
        return sorted(out, key=lambda j: -j["created"])

    def get(self, job_id: str) -> dict[str, Any]:
        with self._job(job_id) as job:
            return job

    def delete(self, job_id: str) -> dict[str, Any]:
        folder = self._folder(job_id)
        shutil.rmtree(folder, ignore_errors=True)
        return {"deleted": job_id}

    def thumbnail(self, job_id: str, face: int) -> bytes:
        job = self.get(job_id)
        if not 0 <= face < len(job["faces"]):
            raise ApiError(404, f"cluster job {job_id} has no face {face}")
        record = job["faces"][face]
        return photo_face_jpeg(self._folder(job_id) / record["photo"], record["box"], self.service.max_side)

    # ------------------------------------------------------------------------------------------ groups
    def name(self, job_id: str, group: int, name: str) -> dict[str, Any]:
        """Enroll every face of a group as ``name`` (faces the gallery finds unusable are skipped)."""
        with self._job(job_id, write=True) as job:
            entry = _group(job, group)
            folder = self._folder(job_id)
            uploads = []
            for face in entry["faces"]:
                record = job["faces"][face]
                data = face_crop(folder / record["photo"], record["box"], max_side=self.service.max_side)
                uploads.append(Upload(f"{record['name']} (face {face})", data))
            report = self.service.enroll(name, uploads, skip_bad=True)
            entry["state"], entry["name"] = "named", report["name"]
        return {"group": group, **report}

    def merge(self, job_id: str, groups: list[int]) -> dict[str, Any]:
        """Join groups into the first one."""
        if len(set(groups)) < 2:
            raise ApiError(422, "give at least two different groups to merge")
        with self._job(job_id, write=True) as job:
            entries = [_group(job, g) for g in groups]
            for entry in entries[1:]:
                entries[0]["faces"] = sorted(entries[0]["faces"] + entry["faces"])
                entry["faces"], entry["state"] = [], "merged"
        return {"group": groups[0], "faces": entries[0]["faces"]}

    def dismiss(self, job_id: str, group: int) -> dict[str, Any]:
        with self._job(job_id, write=True) as job:
            _group(job, group)["state"] = "dismissed"
        return {"group": group, "state": "dismissed"}

    # ------------------------------------------------------------------------------------------ storage
    def _folder(self, job_id: str) -> Path:
        if not (len(job_id) == 12 and all(c in "0123456789abcdef" for c in job_id)):
            raise ApiError(404, f"no cluster job {job_id!r}")
        folder = self.root / job_id
        if not (folder / JOB_FILE).is_file():
            raise ApiError(404, f"no cluster job {job_id!r}")
        return folder

    @contextmanager
    def _job(self, job_id: str, write: bool = False) -> Iterator[dict[str, Any]]:
        """The job's state under a file lock (shared by every worker process); saved when ``write``."""
        folder = self._folder(job_id)
        fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if write else fcntl.LOCK_SH)
            job = json.loads((folder / JOB_FILE).read_text())
            yield job
            if write:
                _write_json(folder / JOB_FILE, job)
        finally:
            os.close(fd)  # closing releases the lock


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


def _in_photo(box, scale: tuple[float, float]) -> list[float]:
    """A box found on decoded (perhaps reduced) pixels, in the photo's own pixels."""
    sx, sy = scale
    return [round(float(v) * (sx if i % 2 == 0 else sy), 1) for i, v in enumerate(box)]


def face_crop(photo: Path, box: list[float], context: float = 1.0,
              max_side: int | None = DEFAULT_MAX_SIDE) -> bytes:
    """A JPEG of the face with ``context`` face sizes around it: enrolment re-detects it as the largest face.

    ``box`` is in the photo's own pixels; a big photo is decoded reduced (the crop with it)."""
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


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)


def _write_json(path: Path, obj: Any) -> None:
    """Atomic: a reader sees the old file or the new one, never half of one."""
    write_text(path, json.dumps(obj, ensure_ascii=False))
