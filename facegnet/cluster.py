"""Grouping the faces of unsorted photos by person, so that a user names groups instead of sorting photos.

Every face of every photo is detected and embedded (:func:`find_faces`), then the embeddings are grouped
(:func:`cluster_embeddings`) by one of:

- ``average`` (default): agglomerative clustering with average linkage (SciPy), cut where the mean cosine
  similarity between two groups falls below the threshold — by default the model card's verification
  threshold. Averaging over all pairs of two groups keeps one look-alike pair from joining two people;
- ``components``: the threshold graph's connected components (single linkage): any one pair above the
  threshold joins two groups — simple, but chains people together in large collections;
- ``hdbscan``: scikit-learn's HDBSCAN on the unit vectors (no threshold; faces it cannot place are left
  alone).

A face no group takes is a group of one. :func:`pairwise_scores` measures a grouping against true labels
(pairwise precision and recall), as ``benchmarks/cluster_lfw.py`` does on LFW.

    >>> from facegnet import FaceRecognizer
    >>> from facegnet.cluster import cluster_folder
    >>> result = cluster_folder(FaceRecognizer(), "photos/")
    >>> for group in result.groups():
    ...     print([result.faces[i].source for i in group])
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from facegnet.align import rounded_share
from facegnet.errors import DataError, FacegnetError
from facegnet.io import IMAGE_SUFFIXES, Decoded, ImageLike, describe, load_image_reduced

METHODS = ("average", "components", "hdbscan")
#: The suffixes of photos :func:`list_photos` picks up.


@dataclass
class FoundFace:
    """One face found in a photo: where, how sure the detector was, and the share of its aligned crop outside
    the photo (:attr:`facegnet.Face.outside`; above :data:`facegnet.detection.quality.TIGHT_CROP` it is cut tight)."""

    source: str
    box: list[float]
    score: float
    landmarks: list[list[float]]
    outside: float | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {"image": self.source, "box": [round(v, 1) for v in self.box], "score": round(self.score, 4)}
        if self.outside is not None:  # share of its aligned crop outside the photo (TIGHT_CROP)
            out["outside"] = rounded_share(self.outside)
        return out


@dataclass
class Clustering:
    """Faces, their embeddings, a group label for each, and the photos that gave no face."""

    faces: list[FoundFace]
    embeddings: np.ndarray  # (N, D) unit vectors
    labels: np.ndarray  # (N,) group of each face, 0..G-1, every face in exactly one group
    method: str
    threshold: float | None
    errors: list[tuple[str, str]] = field(default_factory=list)  # (photo, reason)

    def groups(self) -> list[list[int]]:
        """Face indices of each group, largest group first (ties: first face first)."""
        found: dict[int, list[int]] = {}
        for i, label in enumerate(self.labels.tolist()):
            found.setdefault(int(label), []).append(i)
        return sorted(found.values(), key=lambda g: (-len(g), g[0]))

    def to_dict(self, known: Sequence[str | None] | None = None) -> dict[str, Any]:
        """The JSON of ``facegnet cluster --out``; ``known``: for each group, the enrolled person it looks like
        (:func:`facegnet.gallery.cluster_jobs.known_people`; null for every group when not given)."""
        groups = self.groups()
        known = list(known) if known is not None else [None] * len(groups)
        return {
            "method": self.method,
            "threshold": self.threshold,
            "photos_without_faces": len({s for s, _ in self.errors}),
            "faces": len(self.faces),
            "groups": [
                {"id": n, "size": len(g), "known": known[n], "faces": [self.faces[i].to_dict() for i in g]}
                for n, g in enumerate(groups)
            ],
            "errors": [{"image": s, "error": r} for s, r in self.errors],
        }


def list_photos(folder: str | Path) -> list[Path]:
    """Every photo under ``folder`` (recursively, hidden files skipped), sorted; DataError if none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError("folder not found" if not folder.exists() else "not a folder", folder)
    photos = sorted(
        p for p in folder.rglob("*")
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )
    if not photos:
        raise DataError("no photos found", folder)
    return photos


def find_faces(recognizer: Any, images: Sequence[ImageLike], *, names: Sequence[str] | None = None,
               chunk: int = 16, max_side: int | None = None,
               ) -> tuple[list[FoundFace], np.ndarray, list[tuple[str, str]]]:
    """Detect and embed every usable face of many photos (MTCNN batched a chunk at a time).

    Faces smaller than the recogniser's ``min_face_size`` (:data:`facegnet.detection.quality.MIN_FACE_SIZE` unless set) are
    left out: their embeddings are unreliable.
    Returns (faces, (N, D) embeddings, [(photo, reason)] for photos that are unreadable or hold no usable face).
    ``names`` labels the photos in results and errors (default: their paths). A photo larger than ``max_side``
    pixels a side is decoded reduced (:func:`facegnet.io.load_image_reduced`, as enrolment decodes it); its
    faces' boxes and landmarks are in the photo's own pixels all the same.
    """
    labels = list(names) if names is not None else [describe(image) for image in images]
    faces: list[FoundFace] = []
    vectors: list[np.ndarray] = []
    errors: list[tuple[str, str]] = []
    for start in range(0, len(images), chunk):
        loaded: list[tuple[str, Decoded]] = []
        for image, label in zip(images[start:start + chunk], labels[start:start + chunk]):
            try:
                loaded.append((label, load_image_reduced(image, max_side)))
            except FacegnetError as exc:
                errors.append((label, exc.reason))
        detections = recognizer.detect_batch([decoded.array for _, decoded in loaded]) if loaded else []
        for (label, decoded), found in zip(loaded, detections):
            usable = [f for f in found if f.size >= recognizer.min_face_size]
            if not usable:
                errors.append((label, "no face found" if not found else "faces too small"))
                continue
            vectors.append(recognizer.embed_faces(decoded.array, usable))
            in_photo = [f.scaled(*decoded.scale) for f in usable] if decoded.reduced else usable
            faces += [FoundFace(label, [float(v) for v in f.box], float(f.score),
                                np.asarray(f.landmarks, float).round(2).tolist(),
                                None if f.outside is None else float(f.outside)) for f in in_photo]
    dim = vectors[0].shape[1] if vectors else 0
    embeddings = np.concatenate(vectors).astype(np.float32) if vectors else np.zeros((0, dim), np.float32)
    return faces, embeddings, errors


def cluster_embeddings(embeddings: np.ndarray, method: str = "average", threshold: float | None = None,
                       min_cluster_size: int = 2) -> np.ndarray:
    """A group label (0..G-1) for each unit vector; ``threshold`` is a cosine similarity (not for hdbscan)."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, not {method!r}")
    x = np.asarray(embeddings, np.float64)
    n = len(x)
    if n == 0:
        return np.zeros(0, np.int64)
    if n == 1:
        return np.zeros(1, np.int64)
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    if method != "hdbscan" and threshold is None:
        raise ValueError(f"method {method!r} needs a threshold")
    if method == "average":
        from scipy.cluster.hierarchy import fcluster, linkage

        tree = linkage(x, method="average", metric="cosine")  # cosine distance = 1 - similarity
        labels = fcluster(tree, t=1.0 - float(threshold), criterion="distance") - 1
    elif method == "components":
        labels = _components(x, float(threshold))
    else:
        from sklearn.cluster import HDBSCAN

        # Euclidean distance between unit vectors is a monotone function of their cosine similarity.
        labels = HDBSCAN(min_cluster_size=max(2, min_cluster_size), min_samples=1, metric="euclidean",
                         copy=True).fit_predict(x)
    return _dense(labels)


def _components(x: np.ndarray, threshold: float, block: int = 2048) -> np.ndarray:
    """Connected components of the graph joining faces with cosine similarity >= threshold."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    rows, cols = [], []
    for start in range(0, len(x), block):  # blockwise: never the whole N×N matrix at once
        sims = x[start:start + block] @ x.T
        r, c = np.nonzero(sims >= threshold)
        rows.append(r + start)
        cols.append(c)
    r, c = np.concatenate(rows), np.concatenate(cols)
    graph = coo_matrix((np.ones(len(r), np.int8), (r, c)), shape=(len(x), len(x)))
    return connected_components(graph, directed=False)[1]


def _dense(labels: np.ndarray) -> np.ndarray:
    """Labels renumbered 0..G-1 in order of first appearance; every -1 (HDBSCAN's noise) its own group."""
    out = np.empty(len(labels), np.int64)
    mapping: dict[int, int] = {}
    for i, label in enumerate(np.asarray(labels).tolist()):
        if label < 0:
            out[i] = len(mapping)
            mapping[-(i + 1) - 10**9] = out[i]  # a fresh key per noise point
        else:
            out[i] = mapping.setdefault(int(label), len(mapping))
    return out


def cluster_folder(recognizer: Any, folder: str | Path, *, method: str = "average",
                   threshold: float | None = None, max_side: int | None = None) -> Clustering:
    """Find, embed and group every face of every photo under ``folder``.

    ``threshold`` defaults to the recogniser's verification threshold (the model card's, or the one given);
    photos larger than ``max_side`` pixels a side are decoded reduced (``facegnet cluster``: 2048; see
    :func:`find_faces`).
    """
    photos = list_photos(folder)
    faces, embeddings, errors = find_faces(recognizer, photos, names=[str(p) for p in photos], max_side=max_side)
    return cluster_faces(faces, embeddings, errors, method=method,
                         threshold=recognizer.threshold if threshold is None else threshold)


def cluster_faces(faces: list[FoundFace], embeddings: np.ndarray, errors: list[tuple[str, str]], *,
                  method: str = "average", threshold: float | None = None) -> Clustering:
    """Group faces found by :func:`find_faces`."""
    used = None if method == "hdbscan" else threshold
    labels = cluster_embeddings(embeddings, method, used)
    return Clustering(faces, embeddings, labels, method, used, errors)


def pairwise_scores(truth: Sequence[Any], labels: Sequence[int]) -> dict[str, float]:
    """Pairwise precision, recall and F1 of a grouping against true identities.

    Precision: of the pairs of faces put in one group, the share that are one person. Recall: of the pairs
    of faces of one person, the share put in one group. Counted from the contingency table, never pair by pair.
    """
    truth_ids = np.unique(np.asarray(truth, dtype=object).astype(str), return_inverse=True)[1]
    labels = np.asarray(labels, np.int64)
    if len(truth_ids) != len(labels):
        raise ValueError("truth and labels differ in length")

    def pairs(counts: np.ndarray) -> float:
        counts = counts.astype(np.float64)
        return float((counts * (counts - 1) / 2).sum())

    joint = np.unique(np.stack([truth_ids, labels], 1), axis=0, return_counts=True)[1]
    together = pairs(joint)
    predicted = pairs(np.bincount(labels))
    actual = pairs(np.bincount(truth_ids))
    precision = together / predicted if predicted else 1.0
    recall = together / actual if actual else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "groups": int(len(np.unique(labels))),
            "people": int(truth_ids.max() + 1) if len(truth_ids) else 0}


__all__ = [
    "METHODS",
    "Clustering",
    "FoundFace",
    "cluster_embeddings",
    "cluster_faces",
    "cluster_folder",
    "find_faces",
    "list_photos",
    "pairwise_scores",
]
