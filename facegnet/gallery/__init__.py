"""Galleries of enrolled people: SQLite store (source of truth), FAISS index (cache), the Gallery API.

Modules, one job each: :mod:`~facegnet.gallery.gallery` (the :class:`Gallery`), :mod:`~.results` (what it
answers), :mod:`~.enrolment` (which faces are good enough, reading photos), :mod:`~.search` (open-set
ranking), :mod:`~.cache` (the index kept in step with SQLite), :mod:`~.rebuild` (re-embedding),
:mod:`~.store` (SQLite), :mod:`~.index` (FAISS), :mod:`~.folders` (locations and enrolment folders),
:mod:`~.draw` (annotated copies); the writer lock is :mod:`facegnet.locking`. A gallery shared by several hosts
lives in PostgreSQL instead: :mod:`~.pg_store` (the store, its change listener and writer lock), :mod:`~.pg_tokens`
(named tokens), :mod:`~.migrate` (copying between the two). Cluster jobs waiting to be named live with the gallery,
in either form: :mod:`~.cluster_jobs`.
"""
from facegnet.gallery.enrolment_rules import QualityPolicy
from facegnet.gallery.folders import GALLERY_ENV, default_gallery_dir, discover
from facegnet.gallery.gallery import Gallery, open_gallery
from facegnet.gallery.results import (
    UNKNOWN,
    Candidate,
    EnrollReport,
    EnrollResult,
    Identification,
    RebuildReport,
)


def __getattr__(name: str):
    # DEFAULT_GALLERY follows $FACEGNET_GALLERY and $XDG_DATA_HOME as they are when it is read.
    if name == "DEFAULT_GALLERY":
        return default_gallery_dir()
    raise AttributeError(f"module 'facegnet.gallery' has no attribute {name!r}")


__all__ = [
    "DEFAULT_GALLERY",
    "GALLERY_ENV",
    "UNKNOWN",
    "Candidate",
    "EnrollReport",
    "EnrollResult",
    "Gallery",
    "Identification",
    "QualityPolicy",
    "RebuildReport",
    "default_gallery_dir",
    "discover",
    "open_gallery",
]
