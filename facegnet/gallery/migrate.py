"""Copy a gallery between SQLite (a directory) and PostgreSQL (``facegnet gallery migrate --to …``), verified.

Everything is copied with its ids: the embedding procedure and model (``meta``), people, templates with their
embeddings, boxes, landmarks and photo hashes. Photos travel too: into PostgreSQL's ``photos`` table from the
template's source file when it is readable, and out of it into ``DIR/photos/`` (the template's source then
points there, so ``facegnet gallery rebuild`` can re-embed it). The copy is one transaction on the target, so
an interrupted migration leaves no half gallery; the target must hold no templates yet. Afterwards the target
is read back and compared: the same people and templates, each embedding bit for bit. Then the cluster jobs
waiting to be named follow, with their photos.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from facegnet.card import sha256_file
from facegnet.errors import GalleryError
from facegnet.gallery.cluster_jobs import copy_jobs, open_job_store
from facegnet.gallery.folders import DB_NAME, _make_private_dir
from facegnet.gallery.pg_store import PgStore, is_database_url, redact
from facegnet.gallery.store import Store, create_private

#: Meta keys that describe one copy's own history, not the gallery: the target starts its own.
_LOCAL_META = ("generation", "removals")


@dataclass
class MigrationReport:
    """What a migration copied, and what reading the target back found."""

    source: str
    target: str
    people: int
    templates: int
    photos: int
    verified: bool
    cluster_jobs: int = 0

    def summary(self) -> str:
        return (f"copied {self.people} people, {self.templates} templates, {self.photos} photos and "
                f"{self.cluster_jobs} cluster jobs from {self.source} to {self.target}; verified: counts and every "
                "embedding match")


def open_location(location: str | Path, create: bool = False) -> Any:
    """The store of a gallery directory or PostgreSQL URL (``create``: make an empty one)."""
    if is_database_url(str(location)):
        return PgStore.open(str(location), create=create)
    directory = Path(location)
    db = directory / DB_NAME
    if not db.exists():
        if not create:
            raise GalleryError("no gallery here", directory)
        _make_private_dir(directory)
        create_private(db)
    return Store.open(db, create=create)


def migrate(source: str | Path, target: str | Path) -> MigrationReport:
    """Copy the gallery at ``source`` (a directory or ``postgresql://…``) to ``target`` (the other kind)."""
    if is_database_url(str(source)) == is_database_url(str(target)):
        raise GalleryError("migrate copies between a gallery directory and a PostgreSQL database (one of each)")
    src = open_location(source)
    try:
        if src.get_meta("fingerprint") is None:
            raise GalleryError("no gallery here (nothing enrolled)", src.path)
        dst = open_location(target, create=True)
        try:
            if dst.count() != (0, 0):
                raise GalleryError("the target already holds a gallery: migrate into an empty one", dst.path)
            photos = _copy(src, dst, Path(target) if not is_database_url(str(target)) else None)
            _verify(src, dst)
            people, templates = dst.count()
        finally:
            dst.close()
    finally:
        src.close()
    jobs = _copy_jobs(source, target)  # after the gallery: they name its people, and are worth less than it
    label = lambda where: redact(str(where)) if is_database_url(str(where)) else str(where)  # noqa: E731
    return MigrationReport(label(source), label(target), people, templates, photos, True, jobs)


def _copy_jobs(source: str | Path, target: str | Path) -> int:
    """The cluster jobs waiting to be named (:mod:`facegnet.gallery.cluster_jobs`), from one location to the other."""
    stores = [open_job_store(None, str(where)) if is_database_url(str(where)) else open_job_store(where)
              for where in (source, target)]
    try:
        return copy_jobs(*stores)
    finally:
        for store in stores:
            store.close()


def _copy(src: Any, dst: Any, target_dir: Path | None) -> int:
    """Everything in one transaction on the target; returns the photos copied."""
    meta = {k: v for k, v in src.meta().items() if k not in _LOCAL_META}
    templates = src.templates(with_embeddings=True)
    photos = 0
    with dst.write():
        for key, value in meta.items():
            dst.set_meta(key, value)
        for person in src.people():  # people in name order, then their templates with their own ids
            dst.person_id(person.name, create=True)
        for record in templates:
            if isinstance(dst, PgStore):
                photos += _photo_into_database(dst, record)
            elif isinstance(src, PgStore) and target_dir is not None:
                copied = _photo_out_of_database(src, record, target_dir)
                if copied is not None:
                    record.source, photos = copied, photos + 1
            dst.insert_template(record)
        dst.after_import()
    return photos


def _photo_into_database(dst: PgStore, record: Any) -> int:
    """Store the template's photo in the database when its file is readable and still the enrolled one."""
    if not record.source or not record.sha256 or not Path(record.source).is_file():
        return 0
    path = Path(record.source)
    if sha256_file(path) != record.sha256:
        return 0
    row = dst.conn.execute("INSERT INTO photos(sha256, suffix, data, created) VALUES (%s, %s, %s, %s) "
                           "ON CONFLICT (sha256) DO NOTHING RETURNING sha256",
                           (record.sha256, path.suffix.lower() or ".img", path.read_bytes(), record.created)).fetchone()
    return int(row is not None)


def _photo_out_of_database(src: PgStore, record: Any, target_dir: Path) -> str | None:
    """Write the template's photo from the database into ``DIR/photos/``; returns its path, or None."""
    if not record.sha256:
        return None
    row = src.conn.execute("SELECT suffix, data FROM photos WHERE sha256 = %s", (record.sha256,)).fetchone()
    if row is None:
        return None
    folder = target_dir / "photos"
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = folder / f"{record.sha256}{row[0]}"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(bytes(row[1]))
    return str(path.resolve())


def _verify(src: Any, dst: Any) -> None:
    """Read the target back: same counts, people, template ids, names and embeddings (bit for bit)."""
    problems = []
    if src.count() != dst.count():
        problems.append(f"counts {dst.count()} instead of {src.count()}")
    if [p.name for p in src.people()] != [p.name for p in dst.people()]:
        problems.append("other people")
    ids_a, vec_a = src.embeddings()
    ids_b, vec_b = dst.embeddings()
    if not np.array_equal(ids_a, ids_b):
        problems.append("other template ids")
    elif vec_a.tobytes() != vec_b.tobytes():
        problems.append("other embeddings")
    elif src.names_of(ids_a) != dst.names_of(ids_b):
        problems.append("templates under other names")
    for key in ("fingerprint", "procedure", "embedding_size", "epoch"):
        if src.get_meta(key) != dst.get_meta(key):
            problems.append(f"another {key}")
    if problems:
        raise GalleryError("the copy does not match its source: " + ", ".join(problems), dst.path)


__all__ = ["MigrationReport", "migrate", "open_location"]
