"""Where a gallery keeps its cluster jobs: groups of faces found in unsorted photos, waiting to be named.

A job is a JSON object (its faces, groups and what was done with each; built by :func:`new_job`) and the photos
its faces were found in. Two stores, chosen by :func:`open_job_store` from where the gallery lives:

- :class:`FolderJobs`, for a gallery directory: ``<gallery>/clusters/<id>/job.json`` and the photos beside it
  (owner-only, like the gallery: these are faces), changed under a file lock so that every worker process of a
  server sees one state;
- :class:`DatabaseJobs`, for a PostgreSQL gallery: the ``cluster_jobs`` and ``cluster_photos`` tables, changed in a
  transaction holding the job's row lock, so that a job started through one server is read, named, merged or
  dismissed through any other server of the gallery.

``facegnet cluster PHOTOS --gallery DIR`` / ``--database URL`` (:func:`save_clustering`) and the server's
``/api/clusters`` both save jobs here; each group notes the enrolled person it looks like (:func:`known_people`).
"""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from facegnet.align import rounded_share
from facegnet.atomic import write_text
from facegnet.cluster import Clustering
from facegnet.detection.quality import cut_tight
from facegnet.errors import GalleryError
from facegnet.gallery.results import UNKNOWN

if TYPE_CHECKING:
    from facegnet.gallery.gallery import Gallery

CLUSTERS_DIR = "clusters"
JOB_FILE = "job.json"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS cluster_jobs (
    id      TEXT PRIMARY KEY,
    created DOUBLE PRECISION NOT NULL,
    job     TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS cluster_photos (
    job_id TEXT NOT NULL REFERENCES cluster_jobs(id) ON DELETE CASCADE,
    name   TEXT NOT NULL,
    data   BYTEA NOT NULL,
    PRIMARY KEY (job_id, name)
);
"""


class NoSuchJob(LookupError):
    """The job (or its photo) is not in the store."""


def new_job(result: Clustering, photos: int, files: dict[str, str],
            scales: dict[str, tuple[float, float]] | None = None,
            known: list[str | None] | None = None) -> dict[str, Any]:
    """The record of a fresh job.

    ``photos``: how many photos were given; ``files``: the stored file name of each photo a face was found in (by
    the name :func:`~facegnet.cluster.find_faces` labelled it with); ``scales``: the factor from the decoded pixels
    the boxes were found on to the photo's own pixels, where a photo was decoded reduced; ``known``: for each
    group, the enrolled person it looks like (:func:`known_people`). Each face notes the share of its aligned crop
    outside the photo (``outside``) and, for one cut tight, why its scores run high (``warning``).
    """
    scales = scales or {}
    known = known or [None] * len(result.groups())
    return {
        "id": uuid.uuid4().hex[:12],
        "created": time.time(),
        "method": result.method,
        "threshold": result.threshold,
        "photos": photos,
        "faces": [{"photo": files[f.source], "name": f.source, "box": _in_photo(f.box, scales.get(f.source)),
                   "score": round(f.score, 4), "outside": rounded_share(f.outside),
                   "warning": cut_tight(f)} for f in result.faces],
        "groups": [{"id": g, "faces": members, "state": "open", "name": None, "known": known[g]}
                   for g, members in enumerate(result.groups())],
        "errors": [{"image": s, "error": r} for s, r in result.errors],
    }


def photo_files(result: Clustering, suffixes: dict[str, str]) -> dict[str, str]:
    """The file name a job stores each photo under that a face was found in (``0000.jpg``, ``0001.png``, …), by
    the photo's name; ``suffixes``: each photo's file suffix."""
    sources = dict.fromkeys(face.source for face in result.faces)
    return {name: f"{n:04d}{suffixes[name]}" for n, name in enumerate(sources)}


def known_people(gallery: Gallery, result: Clustering) -> list[str | None]:
    """For each group of ``result`` (largest first): the enrolled person most of its faces are identified as (at
    the gallery's open-set threshold), or None. The embeddings must come from the gallery's own procedure (a
    :class:`~facegnet.gallery.Gallery` opened with the recogniser that made them checks that)."""
    groups = result.groups()
    if not len(gallery) or not len(result.embeddings):
        return [None] * len(groups)
    named = [match.name for match in gallery.search(result.embeddings)]
    out: list[str | None] = []
    for group in groups:
        votes = Counter(named[i] for i in group if named[i] != UNKNOWN).most_common(1)
        out.append(votes[0][0] if votes and 2 * votes[0][1] > len(group) else None)
    return out


def save_clustering(gallery: Gallery, result: Clustering, photos: int) -> dict[str, Any]:
    """Save the grouping of photos on this machine (faces labelled with their paths, as
    :func:`~facegnet.cluster.cluster_folder` does) as a cluster job of the gallery, where the page of any of its
    servers shows it to name; each group notes the enrolled person it looks like. Returns the job."""
    sources = dict.fromkeys(face.source for face in result.faces)
    files = photo_files(result, {name: Path(name).suffix.lower() for name in sources})
    job = new_job(result, photos, files, known=known_people(gallery, result))
    store = open_job_store(gallery.path, gallery.database)
    try:
        store.add(job, {files[name]: Path(name).read_bytes() for name in sources})
    finally:
        store.close()
    return job


def summary(job: dict[str, Any]) -> dict[str, Any]:
    """What a listing of jobs shows of one."""
    return {"id": job["id"], "created": job["created"], "faces": len(job["faces"]),
            "groups": sum(g["state"] == "open" for g in job["groups"])}


def valid_id(job_id: str) -> bool:
    return len(job_id) == 12 and all(c in "0123456789abcdef" for c in job_id)


class FolderJobs:
    """The cluster jobs of a gallery directory, in ``<gallery>/clusters/``."""

    def __init__(self, gallery_dir: str | Path) -> None:
        self.root = Path(gallery_dir) / CLUSTERS_DIR

    def add(self, job: dict[str, Any], photos: dict[str, bytes]) -> None:
        """Store a new job and its photos (file name → bytes); on failure nothing of it stays."""
        folder = self.root / job["id"]
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        folder.mkdir(mode=0o700)
        try:
            for filename, data in photos.items():
                fd = os.open(folder / filename, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as out:
                    out.write(data)
            _write_json(folder / JOB_FILE, job)  # last: a job without its file is no job
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise

    def list(self) -> list[dict[str, Any]]:
        """Summaries of every job, newest first."""
        out = []
        if self.root.is_dir():
            for folder in self.root.iterdir():
                try:
                    out.append(summary(json.loads((folder / JOB_FILE).read_text())))
                except (OSError, ValueError, KeyError):
                    continue
        return sorted(out, key=lambda j: -j["created"])

    def get(self, job_id: str) -> dict[str, Any]:
        with self.update(job_id, write=False) as job:
            return job

    def photo(self, job_id: str, filename: str) -> bytes:
        path = self._folder(job_id) / filename
        if Path(filename).name != filename or not path.is_file():
            raise NoSuchJob(job_id)
        return path.read_bytes()

    def delete(self, job_id: str) -> None:
        shutil.rmtree(self._folder(job_id), ignore_errors=True)

    @contextmanager
    def update(self, job_id: str, write: bool = True) -> Iterator[dict[str, Any]]:
        """The job's state under a file lock (shared by every process); saved when the block ends, if ``write``."""
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

    def close(self) -> None:
        pass

    def _folder(self, job_id: str) -> Path:
        folder = self.root / job_id
        if not valid_id(job_id) or not (folder / JOB_FILE).is_file():
            raise NoSuchJob(job_id)
        return folder


class DatabaseJobs:
    """The cluster jobs of a PostgreSQL gallery (thread-safe: reads share one connection behind a lock; each
    change takes a connection of its own for its transaction, which may wait on an enrolment)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._lock = threading.Lock()
        self._conn: Any = None
        self._ready = False

    def _connect(self) -> Any:
        from facegnet.gallery.pg_store import _CHANGE_KEY, connect

        conn = connect(self.url)
        if not self._ready:  # galleries made before cluster jobs lived in the database get the tables now
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_CHANGE_KEY,))  # one creator at a time
                conn.execute(_SCHEMA)
            self._ready = True
        return conn

    def _execute(self, sql: str, params: tuple = ()) -> list[tuple]:
        with self._lock:
            if self._conn is None or self._conn.closed:
                self._conn = self._connect()
            return self._conn.execute(sql, params).fetchall()

    def add(self, job: dict[str, Any], photos: dict[str, bytes]) -> None:
        """Store a new job and its photos in one transaction."""
        with self._lock:
            if self._conn is None or self._conn.closed:
                self._conn = self._connect()
            with self._conn.transaction(), self._conn.cursor() as cursor:
                cursor.execute("INSERT INTO cluster_jobs(id, created, job) VALUES (%s, %s, %s)",
                               (job["id"], job["created"], json.dumps(job, ensure_ascii=False)))
                cursor.executemany("INSERT INTO cluster_photos(job_id, name, data) VALUES (%s, %s, %s)",
                                   [(job["id"], name, data) for name, data in photos.items()])

    def list(self) -> list[dict[str, Any]]:
        rows = self._execute("SELECT job FROM cluster_jobs ORDER BY created DESC")
        return [summary(json.loads(job)) for (job,) in rows]

    def get(self, job_id: str) -> dict[str, Any]:
        rows = self._execute("SELECT job FROM cluster_jobs WHERE id = %s", (job_id,))
        if not rows:
            raise NoSuchJob(job_id)
        return json.loads(rows[0][0])

    def photo(self, job_id: str, filename: str) -> bytes:
        rows = self._execute("SELECT data FROM cluster_photos WHERE job_id = %s AND name = %s", (job_id, filename))
        if not rows:
            raise NoSuchJob(job_id)
        return bytes(rows[0][0])

    def delete(self, job_id: str) -> None:
        if not self._execute("DELETE FROM cluster_jobs WHERE id = %s RETURNING id", (job_id,)):  # photos cascade
            raise NoSuchJob(job_id)

    @contextmanager
    def update(self, job_id: str, write: bool = True) -> Iterator[dict[str, Any]]:
        """The job's state with its row locked (other servers' changes to it wait); saved when the block ends."""
        conn = self._connect()
        try:
            with conn.transaction():
                row = conn.execute("SELECT job FROM cluster_jobs WHERE id = %s FOR UPDATE", (job_id,)).fetchone()
                if row is None:
                    raise NoSuchJob(job_id)
                job = json.loads(row[0])
                yield job
                if write:
                    conn.execute("UPDATE cluster_jobs SET job = %s WHERE id = %s",
                                 (json.dumps(job, ensure_ascii=False), job_id))
        finally:
            conn.close()

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


JobStore = FolderJobs | DatabaseJobs


def open_job_store(gallery_dir: str | Path | None, database: str | None = None) -> JobStore:
    """The job store of a gallery: its PostgreSQL database when ``database`` is given, else its directory."""
    if database is not None:
        return DatabaseJobs(database)
    if gallery_dir is None:
        raise GalleryError("cluster jobs need a gallery: give --gallery DIR or --database URL")
    return FolderJobs(gallery_dir)


def copy_jobs(source: JobStore, target: JobStore) -> int:
    """Copy every job of one store, with its photos and under its own id, into another (``gallery migrate``);
    a job the target holds already stays as it is. Returns the jobs copied."""
    copied = 0
    there = {listed["id"] for listed in target.list()}
    for listed in source.list():
        if listed["id"] in there:
            continue
        job = source.get(listed["id"])
        files = dict.fromkeys(face["photo"] for face in job["faces"])
        target.add(job, {name: source.photo(job["id"], name) for name in files})
        copied += 1
    return copied


def _in_photo(box: list[float], scale: tuple[float, float] | None) -> list[float]:
    """A box found on decoded (perhaps reduced) pixels, in the photo's own pixels."""
    sx, sy = scale or (1.0, 1.0)
    return [round(float(v) * (sx if i % 2 == 0 else sy), 1) for i, v in enumerate(box)]


def _write_json(path: Path, obj: Any) -> None:
    """Atomic: a reader sees the old file or the new one, never half of one."""
    write_text(path, json.dumps(obj, ensure_ascii=False))


__all__ = ["CLUSTERS_DIR", "JOB_FILE", "DatabaseJobs", "FolderJobs", "JobStore", "NoSuchJob", "copy_jobs",
           "known_people", "new_job", "open_job_store", "photo_files", "save_clustering", "summary", "valid_id"]
