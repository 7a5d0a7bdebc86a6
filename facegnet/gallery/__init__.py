"""Galleries of enrolled people: SQLite store (source of truth), FAISS index (cache), the Gallery API."""
from facegnet.gallery.gallery import (
    DEFAULT_GALLERY,
    UNKNOWN,
    Candidate,
    EnrollReport,
    EnrollResult,
    Gallery,
    Identification,
    QualityPolicy,
    RebuildReport,
    discover,
    open_gallery,
)

__all__ = [
    "DEFAULT_GALLERY",
    "UNKNOWN",
    "Candidate",
    "EnrollReport",
    "EnrollResult",
    "Gallery",
    "Identification",
    "QualityPolicy",
    "RebuildReport",
    "discover",
    "open_gallery",
]
