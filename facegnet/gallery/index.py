"""The FAISS side of a gallery: unit vectors, inner-product search, removable by template id.

Embeddings are L2-normalised, so the inner product is the cosine similarity. Three index kinds:

- ``flat``: exact search (``IndexFlatIP`` in an ``IndexIDMap2``); the default for small galleries.
- ``pq``: every vector scanned as a 16-byte product-quantised code with SIMD "fast scan"
  (``IndexPQFastScan``), the best 64 then re-scored exactly against the full vectors kept beside them
  (``IndexFlatIP``). Exhaustive, so it keeps recall where graphs and cells lose it on high-dimensional
  embeddings; the default for large galleries (recall@1 1.0 at 1.5-2 ms a query at 1M on two busy cores).
- ``ivfpq``: IVF with product-quantised codes (64 bytes a vector instead of 2 KiB), for galleries too large
  for memory; its similarities are approximate (the gallery re-scores its shortlist from SQLite).

Measured in benchmarks/gallery_index.py, where ``pq`` beat a graph (HNSW) and plain IVF cells at every size on
recall and latency, so those two are not offered; a gallery that recorded one of them opens with ``auto``.

``auto`` picks one from the gallery's size (:func:`choose_kind`). The index is only a cache of the SQLite
store: it is saved atomically (temporary file, fsync, ``os.replace``) with a small JSON header that says
which state of the store it reflects, and rebuilt or topped up from the store whenever that does not match.
"""
from __future__ import annotations

import json
import math
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from facegnet.atomic import atomic_path

KINDS: tuple[str, ...] = ("flat", "pq", "ivfpq")
#: Kinds galleries could record before the benchmark retired them: such a gallery's index is rebuilt as ``auto``.
RETIRED_KINDS: tuple[str, ...] = ("ivf", "hnsw")
#: Below this many templates ``auto`` keeps exact search (about a millisecond a query on two cores);
#: from here on it uses ``pq``, which keeps recall@1 >= 0.99 under 2 ms up to 1M (benchmarks/gallery_index.py).
AUTO_EXACT_MAX = 10_000
#: At or above this many templates ``auto`` uses IVF-PQ: ``pq`` keeps 2 KiB of exact vector per template
#: in memory (8 GB at this size).
AUTO_PQ_MIN = 4_000_000
#: Trained kinds need this many vectors to train; fewer fall back to exact search.
MIN_TRAIN = 1_000
#: Kinds whose codebooks are trained on the gallery's vectors (and retrained as it grows).
TRAINED = ("pq", "ivfpq")
#: Searches of fewer queries than this run on one thread: waking OpenMP threads for one query costs
#: more than it saves, and much more on a busy machine.
SINGLE_THREAD_BELOW = 16

_MAGIC = b"FGIDX001"
# Defaults that the benchmark (benchmarks/gallery_index.py) found to give recall@1 >= 0.99.
_DEFAULTS: dict[str, dict[str, Any]] = {
    "flat": {},
    "pq": {"pq_m": 32, "rerank": 64},
    "ivfpq": {"nprobe": 64, "pq_m": 64},
}


def choose_kind(count: int) -> str:
    """The index kind ``auto`` uses for a gallery of ``count`` templates."""
    if count < AUTO_EXACT_MAX:
        return "flat"
    if count < AUTO_PQ_MIN:
        return "pq"
    return "ivfpq"


def resolve_kind(kind: str, count: int, params: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
    """The kind and parameters :meth:`GalleryIndex.build` really uses for ``count`` vectors.

    ``auto`` (and a retired kind) becomes :func:`choose_kind`; trained kinds fall back to exact ``flat`` search
    when there are too few vectors to train their k-means (about 39 a cell, and 39 a code word for PQ).
    """
    if kind == "auto" or kind in RETIRED_KINDS:
        kind = choose_kind(count)
    if kind not in KINDS:
        raise ValueError(f"unknown index kind {kind!r} (choose from auto, {', '.join(KINDS)})")
    merged = {**_DEFAULTS[kind], **{k: v for k, v in (params or {}).items() if v is not None}}
    merged.pop("trained_on", None)
    if kind == "pq" and count < MIN_TRAIN:
        return "flat", {}
    if kind == "ivfpq":
        merged.setdefault("nlist", nlist_for(count))
        needed = max(39 * merged["nlist"], 39 * 256)
        if count < needed:
            return "flat", {}
    return kind, merged


def normalise(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length, as contiguous float32 (zero rows stay zero)."""
    x = np.ascontiguousarray(np.atleast_2d(vectors), dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x / np.maximum(norms, 1e-12), dtype=np.float32)


def nlist_for(count: int) -> int:
    """Number of IVF cells for ``count`` vectors: about 2·sqrt(n), a power of two, 16 to 65536 cells,
    and no more than k-means can fit with ~39 points a cell."""
    target = 2.0 * math.sqrt(max(count, 1))
    cells = 2 ** round(math.log2(target))
    while cells > 16 and cells * 39 > count:
        cells //= 2
    return int(min(65536, max(16, cells)))


def _as_ids(ids: Any) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(ids, dtype=np.int64).reshape(-1))


@dataclass
class GalleryIndex:
    """A FAISS index of unit vectors keyed by int64 template ids.

    Create one with :meth:`build` (which trains the trained kinds on the vectors it is given) or :meth:`load`.
    """

    dim: int
    kind: str
    params: dict[str, Any]
    index: Any  # the FAISS index
    exact: Any = None  # ``pq`` only: the full vectors (IndexIDMap2 of IndexFlatIP) that re-score shortlists
    _ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # ids held

    # ----------------------------------------------------------------------------------------- building
    @classmethod
    def build(
        cls,
        dim: int,
        ids: Any = (),
        vectors: np.ndarray | None = None,
        kind: str = "auto",
        **params: Any,
    ) -> "GalleryIndex":
        """A new index of ``kind`` holding ``vectors`` under ``ids``.

        Trained kinds (``pq``, ``ivfpq``) learn their codebooks / cells from (a sample of) these
        vectors; with too few of them to train, the index falls back to ``flat``, which is exact anyway.
        """
        ids = _as_ids(ids)
        x = np.zeros((0, dim), np.float32) if vectors is None else normalise(vectors).reshape(-1, dim)
        if len(ids) != len(x):
            raise ValueError(f"{len(ids)} ids for {len(x)} vectors")
        kind, merged = resolve_kind(kind, len(x), params)
        index = cls._new_faiss(dim, kind, merged)
        if kind in TRAINED:
            # ~40 points a cell / code word is what FAISS asks for; a fixed seed keeps rebuilds reproducible.
            rng = np.random.default_rng(0)
            cells = 40 * merged.get("nlist", 0)
            wanted = {"pq": 65_536, "ivfpq": max(cells, 40 * 256)}[kind]
            n_train = min(len(x), wanted)
            sample = x if n_train == len(x) else x[np.sort(rng.choice(len(x), n_train, replace=False))]
            _train(index, kind, sample)
            merged["trained_on"] = len(x)  # the gallery retrains once it has grown well past this
        exact = faiss.IndexIDMap2(faiss.IndexFlatIP(dim)) if kind == "pq" else None
        out = cls(dim=dim, kind=kind, params=merged, index=index, exact=exact)
        out._apply_search_params()
        if len(x):
            out.add(ids, x)
        return out

    @staticmethod
    def _new_faiss(dim: int, kind: str, params: dict[str, Any]) -> Any:
        ip = faiss.METRIC_INNER_PRODUCT
        if kind == "flat":
            return faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        if kind == "pq":  # 4-bit codes: the layout SIMD fast scan needs
            return faiss.IndexIDMap2(faiss.IndexPQFastScan(dim, int(params["pq_m"]), 4, ip))
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFPQ(quantizer, dim, int(params["nlist"]), int(params["pq_m"]), 8, ip)
        return index  # faiss' Python wrapper keeps the quantizer alive with the index

    def _apply_search_params(self) -> None:
        if self.kind == "ivfpq":
            self.index.nprobe = int(self.params["nprobe"])

    def set_search_params(self, **params: Any) -> None:
        """Change ``nprobe`` (ivfpq) or ``rerank`` (pq) of a built index."""
        self.params.update({k: v for k, v in params.items() if v is not None})
        self._apply_search_params()

    # ----------------------------------------------------------------------------------------- contents
    def __len__(self) -> int:
        return int(self.index.ntotal)

    def ids(self) -> np.ndarray:
        """The template ids this index holds, sorted."""
        return np.sort(self._ids)

    def add(self, ids: Any, vectors: np.ndarray) -> None:
        """Add unit vectors (normalised here anyway) under new ids."""
        ids = _as_ids(ids)
        if not len(ids):
            return
        x = normalise(vectors).reshape(-1, self.dim)
        if len(x) != len(ids):
            raise ValueError(f"{len(ids)} ids for {len(x)} vectors")
        self.index.add_with_ids(x, ids)
        if self.exact is not None:
            self.exact.add_with_ids(x, ids)
        self._ids = np.concatenate([self._ids, ids])

    def remove(self, ids: Any) -> int:
        """Remove ids (unknown ones are ignored); returns how many were removed."""
        ids = _as_ids(ids)
        present = ids[np.isin(ids, self._ids)]
        if not len(present):
            return 0
        self.index.remove_ids(faiss.IDSelectorBatch(present))
        if self.exact is not None:
            self.exact.remove_ids(faiss.IDSelectorBatch(present))
        self._ids = self._ids[~np.isin(self._ids, present)]
        return len(present)

    def reconstruct(self, ids: Any) -> np.ndarray:
        """The stored vectors of ``ids`` (exact for flat and pq, approximate for IVF-PQ)."""
        ids = _as_ids(ids)
        if not len(ids):
            return np.zeros((0, self.dim), np.float32)
        if self.exact is not None:
            return self.exact.reconstruct_batch(ids).astype(np.float32)
        if self.kind == "ivfpq":
            self.index.make_direct_map(True)
        return np.stack([self.index.reconstruct(int(i)) for i in ids]).astype(np.float32)

    # ----------------------------------------------------------------------------------------- search
    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` (similarities, ids) for each query row; missing slots hold id -1 and -inf."""
        q = normalise(queries).reshape(-1, self.dim)
        k = max(1, int(k))
        if len(self) == 0:
            return np.full((len(q), k), -np.inf, np.float32), np.full((len(q), k), -1, np.int64)
        with _threads(1 if len(q) < SINGLE_THREAD_BELOW else None):
            if self.kind == "pq":
                return self._search_reranked(q, k)
            else:
                sims, ids = self.index.search(q, k)
        sims = np.where(ids < 0, -np.inf, sims).astype(np.float32)
        return sims, ids.astype(np.int64)

    def _search_reranked(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``pq``: a shortlist from the codes, re-scored with the exact vectors, best ``k`` kept."""
        shortlist = min(len(self), max(k, int(self.params["rerank"])))
        _, cand = self.index.search(q, shortlist)
        cand = cand.astype(np.int64)
        valid = cand >= 0
        vectors = np.zeros(cand.shape + (self.dim,), np.float32)
        vectors[valid] = self.exact.reconstruct_batch(np.ascontiguousarray(cand[valid]))
        sims = np.einsum("qkd,qd->qk", vectors, q)
        sims[~valid] = -np.inf
        order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
        sims, ids = np.take_along_axis(sims, order, 1), np.take_along_axis(cand, order, 1)
        if ids.shape[1] < k:  # fewer vectors than k
            pad = k - ids.shape[1]
            sims = np.pad(sims, ((0, 0), (0, pad)), constant_values=-np.inf)
            ids = np.pad(ids, ((0, 0), (0, pad)), constant_values=-1)
        return sims.astype(np.float32), np.where(np.isinf(sims), -1, ids)

    # ----------------------------------------------------------------------------------------- files
    def save(self, path: str | Path, header: dict[str, Any] | None = None) -> Path:
        """Write the index atomically (temp file, fsync, rename), owner-readable only.

        ``header`` is stored beside the FAISS bytes; the gallery records there which state of its store
        the index reflects.
        """
        path = Path(path)
        meta = {
            **(header or {}),
            "dim": self.dim,
            "kind": self.kind,
            "params": self.params,
            "count": len(self),
        }
        blob = json.dumps(meta).encode()
        with atomic_path(path) as tmp, open(tmp, "wb") as handle:
            handle.write(_MAGIC + struct.pack("<Q", len(blob)) + blob)
            # Streams the FAISS bytes: no second in-memory copy of a large index.
            faiss.write_index(self.index, faiss.PyCallbackIOWriter(handle.write))
            if self.exact is not None:
                faiss.write_index(self.exact, faiss.PyCallbackIOWriter(handle.write))
        return path

    @classmethod
    def load(cls, path: str | Path) -> tuple["GalleryIndex", dict[str, Any]]:
        """Read an index written by :meth:`save`; returns it and its header. Raises ValueError if corrupt."""
        path = Path(path)
        with open(path, "rb") as handle:
            if handle.read(len(_MAGIC)) != _MAGIC:
                raise ValueError("not a facegnet index file")
            (size,) = struct.unpack("<Q", handle.read(8))
            if size > 1 << 30:
                raise ValueError("corrupt index header")
            meta = json.loads(handle.read(size))
            try:
                index = faiss.read_index(faiss.PyCallbackIOReader(handle.read))
                exact = faiss.read_index(faiss.PyCallbackIOReader(handle.read)) if meta["kind"] == "pq" else None
            except RuntimeError as exc:
                raise ValueError(f"corrupt FAISS data ({str(exc).splitlines()[0][:80]})") from None
        kind = meta["kind"]
        if kind not in KINDS:
            raise ValueError(f"index kind {kind!r} is no longer offered (rebuilt from the store)")
        out = cls(dim=int(meta["dim"]), kind=kind, params=dict(meta["params"]), index=index, exact=exact)
        if index.d != out.dim:
            raise ValueError("index dimension does not match its header")
        if exact is not None and exact.ntotal != index.ntotal:
            raise ValueError("index parts disagree")
        out._ids = _held_ids(index, kind)
        if len(out) != int(meta.get("count", -1)):
            raise ValueError("index size does not match its header")
        out._apply_search_params()
        return out, meta


def _train(index: Any, kind: str, sample: np.ndarray) -> None:
    """Train the cells and/or codebooks of ``index`` on ``sample``.

    Product-quantiser training runs many tiny k-means (one per sub-space): on one thread it takes a
    fraction of a second, while OpenMP's thread hand-offs make it 20-50x slower on a busy two-core machine.
    The IVF cells, one large k-means, keep every thread.
    """
    if kind == "ivfpq":
        kmeans = faiss.Kmeans(index.d, index.nlist, niter=20, spherical=True, seed=1234)
        kmeans.train(sample)
        index.quantizer.add(kmeans.centroids)  # a trained quantizer: IVF training only fits the codes
    with _threads(1):
        index.train(sample)


@contextmanager
def _threads(count: int | None) -> Iterator[None]:
    """Run FAISS on ``count`` OpenMP threads for a while (None: leave as is)."""
    if count is None:
        yield
        return
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(count)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def _held_ids(index: Any, kind: str) -> np.ndarray:
    """Every id stored in a FAISS index (IDMap2 keeps a table; IVF keeps ids in its lists)."""
    if kind in ("flat", "pq"):
        return faiss.vector_to_array(index.id_map).astype(np.int64)
    invlists = index.invlists
    parts = []
    for list_no in range(index.nlist):
        size = invlists.list_size(list_no)
        if size:
            parts.append(faiss.rev_swig_ptr(invlists.get_ids(list_no), size).copy())
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)
