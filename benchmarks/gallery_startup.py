#!/usr/bin/env python3
"""What a server pays to start on a large gallery: bulk insert, reading every embedding and building the index,
PostgreSQL against SQLite in the same run; writes benchmarks/results/gallery_startup.{json,md}.

``--size`` random unit vectors (four per person) are added through ``Gallery.add_embeddings`` in blocks of 50k
(one transaction each; into PostgreSQL as one COPY) into a fresh SQLite gallery and a fresh PostgreSQL database
(made next to the one named: the role needs CREATE DATABASE; dropped at the end), then each gallery is opened as
a new server would: read every embedding, build the index (kind ``pq``, the default at this size). Also reported:
the database's size on disk, the time of one search through the gallery (FAISS plus the names read from the
store), and the same blocks inserted into a third database with one INSERT per template (the peer of the COPY).

    python benchmarks/gallery_startup.py --database postgresql://postgres@127.0.0.1:5432/postgres --size 100000
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from host_info import run_line, run_record, write_result

from facegnet.gallery import Gallery
from facegnet.gallery.folders import DB_NAME

HERE = Path(__file__).resolve().parent
NAME = "facegnet_startup"
ROWS = "facegnet_startup_rows"  # the row-by-row peer's database


def fill(gallery: Gallery, size: int) -> float:
    rng = np.random.default_rng(0)
    started = time.perf_counter()
    for start in range(0, size, 50_000):
        count = min(50_000, size - start)
        vectors = rng.standard_normal((count, 512)).astype(np.float32)
        gallery.add_embeddings([f"p{(start + i) // 4}" for i in range(count)], vectors)
    return time.perf_counter() - started


def fill_row_by_row(url: str, size: int) -> float:
    """The same blocks into PostgreSQL with one INSERT per template (the tables' generic path, which
    ``add_embeddings`` took before it sent a COPY), in the same transactions: the peer of the COPY."""
    from facegnet.gallery.index import normalise
    from facegnet.gallery.tables import SqlTables

    rng = np.random.default_rng(0)
    with Gallery(database=url, create=True, index="pq") as gallery:
        started = time.perf_counter()
        for start in range(0, size, 50_000):
            count = min(50_000, size - start)
            vectors = normalise(rng.standard_normal((count, 512)).astype(np.float32))
            with gallery.store.write():
                SqlTables.add_templates(gallery.store, [f"p{(start + i) // 4}" for i in range(count)], vectors,
                                        [None] * count, [None] * count)
        return time.perf_counter() - started


def start_up(location: dict) -> dict:
    started = time.perf_counter()
    with Gallery(**location) as gallery:
        t0 = time.perf_counter()
        ids, vectors = gallery.store.embeddings()
        read_s = time.perf_counter() - t0
        gallery.index  # noqa: B018 - built here
        total_s = time.perf_counter() - started
        kind = gallery.index.kind
        probes = vectors[:200] + 0.01
        t0 = time.perf_counter()
        for row in probes:
            gallery.search(row[None])
        search_ms = (time.perf_counter() - t0) / len(probes) * 1000
    return {"read_s": round(read_s, 2), "open_read_build_s": round(total_s, 2), "index": kind,
            "search_ms": round(search_ms, 2), "templates": len(ids)}


def main() -> None:
    import psycopg

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database", required=True, help="a PostgreSQL server whose role may create databases")
    parser.add_argument("--size", type=int, default=100_000)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "gallery_startup")
    args = parser.parse_args()
    base = args.database.rsplit("/", 1)[0]
    with psycopg.connect(args.database, autocommit=True) as conn:
        for name in (NAME, ROWS):
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')
    url = f"{base}/{NAME}"
    rows = {}
    try:
        with tempfile.TemporaryDirectory(prefix="facegnet-startup-") as tmp:
            for label, location in (("sqlite", {"path": Path(tmp) / "gallery"}), ("postgresql", {"database": url})):
                with Gallery(**location, create=True, index="pq") as gallery:
                    insert_s = fill(gallery, args.size)
                rows[label] = {"insert_s": round(insert_s, 1), **start_up(location)}
                print(label, rows[label], flush=True)
            rows["sqlite"]["disk_mb"] = round((Path(tmp) / "gallery" / DB_NAME).stat().st_size / 2**20, 1)
        with psycopg.connect(args.database, autocommit=True) as conn:
            rows["postgresql"]["disk_mb"] = round(
                conn.execute("SELECT pg_database_size(%s)", (NAME,)).fetchone()[0] / 2**20, 1)
        row_by_row_s = round(fill_row_by_row(f"{base}/{ROWS}", args.size), 1)
        print("postgresql, one INSERT per template:", row_by_row_s, flush=True)
    finally:
        with psycopg.connect(args.database, autocommit=True) as conn:
            for name in (NAME, ROWS):
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    result = {
        **run_record(f"python benchmarks/gallery_startup.py --database URL --size {args.size}"), "size": args.size,
        **rows,
        "postgresql_vs_sqlite_start_up": round(rows["postgresql"]["open_read_build_s"]
                                               / rows["sqlite"]["open_read_build_s"], 2),
        "postgresql_vs_sqlite_insert": round(rows["postgresql"]["insert_s"] / rows["sqlite"]["insert_s"], 2),
        "postgresql_insert_row_by_row_s": row_by_row_s,
        "postgresql_copy_speedup": round(row_by_row_s / rows["postgresql"]["insert_s"], 2),
    }
    lines = [
        "# Starting on a large gallery: PostgreSQL against SQLite", "", run_line(result), "",
        "| store | insert s | read every embedding s | open + read + build s | index | search ms | on disk MB |",
        "|---|---:|---:|---:|---|---:|---:|",
        *[f"| {k} | {r['insert_s']} | {r['read_s']} | {r['open_read_build_s']} | {r['index']} | {r['search_ms']} | "
          f"{r['disk_mb']} |" for k, r in rows.items()], "",
        (f"{args.size:,} templates. Opening, reading every embedding and building the index takes "
        f"{result['postgresql_vs_sqlite_start_up']}× as long from PostgreSQL as from SQLite (here neither had an "
        "index file: templates added with `add_embeddings` leave none until the index is first used; a SQLite "
        "gallery that has one loads it instead, while every PostgreSQL server builds its own). Adding them took "
        f"{result['postgresql_vs_sqlite_insert']}× as long into PostgreSQL as into SQLite (`add_embeddings` sends "
        "each block to PostgreSQL as one binary COPY, in one transaction); the same blocks with one INSERT per "
        f"template took {row_by_row_s} s, {result['postgresql_copy_speedup']}× the COPY's time."), "",
    ]
    write_result(args.out, result, lines)


if __name__ == "__main__":
    main()
