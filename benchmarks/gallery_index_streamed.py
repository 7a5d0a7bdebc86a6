#!/usr/bin/env python3
"""The IVF-PQ gallery index at sizes whose vectors do not fit in memory; writes
benchmarks/results/gallery_index_streamed.{json,md}.

The same synthetic gallery as benchmarks/gallery_index.py (identities uniform on the 512-d sphere, four templates
each, queries that are new samples of enrolled identities), but generated in blocks from a seed per block and never
held whole: the index (``GalleryIndex``, kind ``ivfpq``, cells for the full size) is trained on the first block and
the blocks are added one by one, while the exact nearest template of every query is kept up to date block by block.
Shortlists are re-scored exactly, as the gallery does from its store, by generating the shortlisted blocks again.
Memory is then the index's (64-byte codes and ids) plus one block, so the size is bounded by time, not memory.
Reported: build time, index memory, the process's peak memory, recall@1 against exact search and p50/p99 of one
query at a time for each search setting.

    python benchmarks/gallery_index_streamed.py --size 3000000
"""
from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from gallery_index import DIM, NOISE, PER_IDENTITY
from host_info import run_line, run_record, write_result
from facegnet.gallery.index import GalleryIndex, nlist_for

HERE = Path(__file__).resolve().parent
MIN_BLOCK = 200_000  # templates per generated block, at least (the first block trains the cells: ~40 a cell)
SETTINGS = [{"nprobe": 64}, {"nprobe": 64, "rerank": 64}, {"nprobe": 256, "rerank": 64}]


def block(n: int, size: int, seed: int, step: int) -> tuple[np.ndarray, np.ndarray]:
    """(identity centres, template vectors) of block ``n`` of ``step`` templates: the same numbers every time."""
    rng = np.random.default_rng([seed, n])
    count = min(step, size - n * step) // PER_IDENTITY
    centres = rng.standard_normal((count, DIM), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    vectors = np.repeat(centres, PER_IDENTITY, axis=0)
    vectors += NOISE / np.sqrt(DIM) * rng.standard_normal(vectors.shape, dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return centres, vectors


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=3_000_000)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--latency-queries", type=int, default=200)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "gallery_index_streamed")
    args = parser.parse_args()
    size = args.size - args.size % PER_IDENTITY
    nlist = nlist_for(size)
    BLOCK = max(MIN_BLOCK, 40 * nlist)  # noqa: N806
    blocks = -(-size // BLOCK)
    seed = 0
    rng = np.random.default_rng(seed)
    who = np.sort(rng.choice(size // PER_IDENTITY, args.queries, replace=False))  # identities probed

    started = time.perf_counter()
    queries = np.empty((args.queries, DIM), np.float32)
    best = np.full(args.queries, -np.inf, np.float32)
    truth = np.zeros(args.queries, np.int64)
    index = None
    for n in range(blocks):
        centres, vectors = block(n, size, seed, BLOCK)
        first = n * BLOCK // PER_IDENTITY
        mine = (who >= first) & (who < first + len(centres))
        queries[mine] = centres[who[mine] - first]  # noise added below, once every centre is in
        ids = np.arange(n * BLOCK, n * BLOCK + len(vectors), dtype=np.int64)
        if index is None:  # trained on the first block, with the cells of the full size
            index = GalleryIndex.build(DIM, ids, vectors, kind="ivfpq", nlist=nlist)
        else:
            index.add(ids, vectors)
        print(f"  block {n + 1}/{blocks} in, {time.perf_counter() - started:.0f} s", flush=True)
    build_s = time.perf_counter() - started
    queries += NOISE / np.sqrt(DIM) * rng.standard_normal(queries.shape, dtype=np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    truth_started = time.perf_counter()
    for n in range(blocks):  # exact search, block by block
        _, vectors = block(n, size, seed, BLOCK)
        sims = queries @ vectors.T
        top = sims.argmax(axis=1)
        val = sims[np.arange(len(queries)), top]
        better = val > best
        best[better], truth[better] = val[better], top[better] + n * BLOCK
    truth_s = time.perf_counter() - truth_started
    assert index is not None
    with tempfile.TemporaryDirectory() as tmp:
        memory_mb = index.save(Path(tmp) / "index.faiss").stat().st_size / 2**20

    rows = []
    for setting in SETTINGS:
        index.set_search_params(nprobe=setting["nprobe"])
        rerank = setting.get("rerank", 0)
        _, shortlist = index.search(queries, max(1, rerank))
        if rerank:  # exact re-scoring of each shortlist, the shortlisted vectors generated again
            exact = np.full(shortlist.shape, -np.inf, np.float32)
            for n in np.unique(shortlist[shortlist >= 0] // BLOCK):
                _, vectors = block(int(n), size, seed, BLOCK)
                here = (shortlist // BLOCK == n) & (shortlist >= 0)
                q_rows, cols = np.nonzero(here)
                exact[q_rows, cols] = np.einsum("kd,kd->k", vectors[shortlist[here] - n * BLOCK], queries[q_rows])
            found = shortlist[np.arange(len(queries)), exact.argmax(axis=1)]
        else:
            found = shortlist[:, 0]
        recall = float((found == truth).mean())
        identity = float((found // PER_IDENTITY == truth // PER_IDENTITY).mean())
        # Latency of one query at a time; re-scoring adds 64 dot products with vectors the gallery reads from its
        # store (measured separately: benchmarks/results/server_load_shared.md for PostgreSQL's side).
        times = []
        spare = np.zeros((max(1, rerank), DIM), np.float32)
        for q in queries[: args.latency_queries]:
            t0 = time.perf_counter()
            index.search(q[None], max(1, rerank))
            if rerank:
                (spare @ q).argmax()
            times.append((time.perf_counter() - t0) * 1000)
        rows.append({**setting, "recall_at_1": round(recall, 4), "same_identity_at_1": round(identity, 4),
                     "p50_ms": round(float(np.percentile(times, 50)), 3),
                     "p99_ms": round(float(np.percentile(times, 99)), 3)})
        print(f"  {setting} recall@1 {recall:.4f} p50 {rows[-1]['p50_ms']} ms", flush=True)

    result = {
        **run_record("python benchmarks/gallery_index_streamed.py " + " ".join(sys.argv[1:])),
        "size": size, "nlist": nlist, "pq_m": index.params.get("pq_m"), "trained_on": min(BLOCK, size),
        "build_s": round(build_s, 1), "exact_search_s": round(truth_s, 1), "index_memory_mb": round(memory_mb, 1),
        "bytes_per_template": round(memory_mb * 2**20 / size, 1), "peak_rss_mb": round(peak_rss_mb(), 1),
        "settings": rows,
    }
    lines = [
        "# IVF-PQ gallery index, streamed (vectors never all in memory)", "", run_line(result), "",
        f"{size:,} templates, {nlist} cells, {result['pq_m']}-byte PQ codes, trained on the first "
        f"{min(BLOCK, size):,}: build (train + add, generation included) {result['build_s']} s; index memory "
        f"{result['index_memory_mb']} MB "
        f"({result['bytes_per_template']} bytes a template); process peak {result['peak_rss_mb']} MB.", "",
        "| search setting | recall@1 | identity@1 | p50 ms | p99 ms |", "|---|---:|---:|---:|---:|",
        *[f"| nprobe={r['nprobe']}" + (f", rerank={r['rerank']}" if r.get("rerank") else "")
          + f" | {r['recall_at_1']:.4f} | {r['same_identity_at_1']:.4f} | {r['p50_ms']} | {r['p99_ms']} |"
          for r in rows], "",
        "Latency: one query at a time; with rerank, the FAISS shortlist plus 64 dot products (the gallery reads the "
        "64 vectors from its store besides). Recall@1: the top template is exact search's.", "",
    ]
    write_result(args.out, result, lines)


if __name__ == "__main__":
    main()
