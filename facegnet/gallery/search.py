"""Open-set search: from query embeddings to the best people, each once, named or ``unknown``.

A person has several templates, so the index is asked for enough templates to see ``top_k`` distinct people.
IVF-PQ similarities are approximate: its shortlist is re-scored exactly from SQLite, so that the threshold is
compared with true cosine similarities.
"""
from __future__ import annotations

import numpy as np

from facegnet.gallery.index import GalleryIndex
from facegnet.gallery.results import UNKNOWN, Candidate, Identification
from facegnet.gallery.store import Store

AGGREGATES = ("max", "mean")
#: Templates an IVF-PQ search shortlists per query before exact re-scoring.
RERANK_SHORTLIST = 64


def rank(index: GalleryIndex, store: Store, queries: np.ndarray, *, top_k: int, threshold: float,
         aggregate: str = "max") -> list[Identification]:
    """The answer for each query (unit rows): its ``top_k`` people, named when the best reaches ``threshold``.

    The index must hold at least one template and reflect ``store``.
    """
    total = len(index)
    approximate = index.kind == "ivfpq"
    k = min(total, max(RERANK_SHORTLIST if approximate else 32, 8 * top_k))
    while True:
        sims, ids = index.search(queries, k)
        if approximate:
            sims, ids = rescore(store, queries, ids)
        names = store.names_of(ids)
        ranked = [best_per_person(s, i, names) for s, i in zip(sims, ids)]
        if k >= total or all(len(r) >= top_k for r in ranked):
            break
        k = min(total, 4 * k)
    if aggregate == "mean":
        ranked = [mean_scores(store, q, r) for q, r in zip(queries, ranked)]
    out = []
    for candidates in ranked:
        candidates = candidates[:top_k]
        best = candidates[0] if candidates else Candidate(UNKNOWN, float("-inf"), -1)
        name = best.name if best.similarity >= threshold else UNKNOWN
        out.append(Identification(name, float(best.similarity), threshold, candidates))
    return out


def rescore(store: Store, queries: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact similarities of each query's shortlisted templates (from SQLite), best first."""
    known, vectors = store.embeddings(np.unique(ids[ids >= 0]))
    row = {int(t): n for n, t in enumerate(known)}
    sims = np.full(ids.shape, -np.inf, np.float32)
    for q, (query, shortlist) in enumerate(zip(queries, ids)):
        for j, tid in enumerate(shortlist.tolist()):
            if tid in row:
                sims[q, j] = float(vectors[row[tid]] @ query)
    order = np.argsort(-sims, axis=1, kind="stable")
    sims, ids = np.take_along_axis(sims, order, 1), np.take_along_axis(ids, order, 1)
    return sims, np.where(np.isinf(sims), -1, ids)


def mean_scores(store: Store, query: np.ndarray, candidates: list[Candidate]) -> list[Candidate]:
    """Re-score candidates by the mean similarity over all of each person's templates."""
    rescored = []
    for cand in candidates:
        _, vectors = store.embeddings(store.template_ids(cand.name))
        if len(vectors):
            rescored.append(Candidate(cand.name, float(np.mean(vectors @ query)), cand.template_id))
    return sorted(rescored, key=lambda c: -c.similarity)


def best_per_person(sims: np.ndarray, ids: np.ndarray, names: dict[int, str]) -> list[Candidate]:
    """Candidates, best first, each person once with their best template (results come sorted)."""
    seen: dict[str, Candidate] = {}
    for sim, tid in zip(sims.tolist(), ids.tolist()):
        name = names.get(tid)
        if tid < 0 or name is None or name in seen:
            continue
        seen[name] = Candidate(name, float(sim), int(tid))
    return list(seen.values())


__all__ = ["AGGREGATES", "RERANK_SHORTLIST", "rank", "rescore", "mean_scores", "best_per_person"]
