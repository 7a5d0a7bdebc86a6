#!/usr/bin/env python3
"""Clustering faces by person, on the training pack's dev split and on LFW; writes
benchmarks/results/cluster_lfw.{json,md}.

The dev split (1,053 aligned faces of 53 CelebA people, never LFW) is where ``facegnet cluster``'s default
method is chosen (best pairwise F1); LFW is the test.

Photos as an unsorted folder would hold them: a subset of LFW people with several photos (up to
``--max-per-person`` each) mixed with people who have a single photo. Each photo's central face (the one LFW
labels) is embedded with the shipped model; the embeddings are grouped by every method of
:mod:`facegnet.cluster`, each threshold taken from the model card (never tuned on LFW):

- average linkage at the card's verification threshold and at its stricter identification threshold;
- the threshold graph's connected components at the same two thresholds;
- scikit-learn's HDBSCAN (min_cluster_size 2; it has no threshold).

For each: pairwise precision and recall (of the pairs put together, how many are one person; of the pairs of
one person, how many were put together), the number of groups against the true number of people, the share of
people whose photos all landed in one group, and the time taken (the grouping only).

    python benchmarks/cluster_lfw.py [--people 200] [--singletons 200] [--max-per-person 8]
    python benchmarks/cluster_lfw.py --all          # every LFW photo (13,233; an estimated 17 minutes to embed)

Embeddings are cached in runs/cluster_lfw_embeddings.npz (keyed by the photos and the weights).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from facegnet.cluster import cluster_embeddings, pairwise_scores
from facegnet.recognizer import FaceRecognizer

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parent.parent / "shared" / "data" / "lfw"
CACHE = HERE.parent / "runs" / "cluster_lfw_embeddings.npz"
TRAIN_PACK = HERE.parent.parent / "shared" / "data" / "train"


def choose(images: Path, people: int, singletons: int, max_per_person: int, everything: bool):
    """(photo, person) pairs: people spread evenly over LFW's alphabetical list, deterministic."""
    folders = sorted(p for p in images.iterdir() if p.is_dir())
    photos = {f.name: sorted(f.glob("*.jpg")) for f in folders}
    if everything:
        return [(p, name) for name, ps in photos.items() for p in ps]
    several = [n for n, ps in photos.items() if len(ps) >= 2]
    single = [n for n, ps in photos.items() if len(ps) == 1]

    def spread(names: list[str], count: int) -> list[str]:
        count = min(count, len(names))
        return [names[int(i * len(names) / count)] for i in range(count)] if count else []

    chosen = [(p, n) for n in spread(several, people) for p in photos[n][:max_per_person]]
    chosen += [(photos[n][0], n) for n in spread(single, singletons)]
    return chosen


def embed(recognizer: FaceRecognizer, photos: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    """(embeddings, mask of photos with a face), cached by photo list and weights."""
    key = hashlib.sha256(("\n".join(map(str, photos)) + recognizer.fingerprint).encode()).hexdigest()
    if CACHE.is_file():
        cached = np.load(CACHE)
        if str(cached["key"]) == key:
            return cached["embeddings"], cached["ok"]
    results = recognizer.embed_images(photos, select="center", progress="embedding LFW")
    ok = np.array([r.ok for r in results])
    dim = next(r.embedding for r in results if r.ok).shape[0]
    embeddings = np.stack([r.embedding if r.ok else np.zeros(dim, np.float32) for r in results])
    CACHE.parent.mkdir(parents=True, exist_ok=True)
    np.savez(CACHE, key=key, embeddings=embeddings, ok=ok)
    return embeddings, ok


def dev_split(recognizer: FaceRecognizer, pack: Path) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings and identities of the training pack's dev faces (aligned crops: no detection needed)."""
    import csv

    from PIL import Image

    with open(pack / "manifest.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["split"] == "dev"]
    crops = np.stack([np.asarray(Image.open(pack / r["crop"]).convert("RGB")) for r in rows])
    return recognizer.embed_crops(crops), np.array([r["identity"] for r in rows])


def evaluate(x: np.ndarray, truth: np.ndarray, runs) -> list[dict]:
    """Every (method, threshold) of ``runs`` on these embeddings, scored against the true identities."""
    rows = []
    for method, threshold, label in runs:
        t0 = time.perf_counter()
        labels = cluster_embeddings(x, method, threshold)
        seconds = time.perf_counter() - t0
        scores = pairwise_scores(truth, labels)
        sizes = np.bincount(labels)
        rows.append({
            "method": method, "label": label, "threshold": threshold, **scores,
            "groups_of_2_or_more": int(np.sum(sizes >= 2)), "largest_group": int(sizes.max()),
            "whole_people": whole_people(truth, labels), "seconds": round(seconds, 3),
        })
        print(f"{label}: precision {scores['precision']:.4f} recall {scores['recall']:.4f} "
              f"groups {scores['groups']} (people {scores['people']}) {seconds:.2f} s", flush=True)
    return rows


def whole_people(truth: np.ndarray, labels: np.ndarray) -> float:
    """Share of people (with 2+ faces) whose faces all landed in one group, with nobody else in it."""
    names, counts = np.unique(truth, return_counts=True)
    good = 0
    for name in names[counts >= 2]:
        groups = set(labels[truth == name].tolist())
        if len(groups) == 1 and np.all(truth[labels == groups.pop()] == name):
            good += 1
    return good / max(1, int(np.sum(counts >= 2)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="LFW directory (with images/)")
    parser.add_argument("--people", type=int, default=200, help="people with several photos")
    parser.add_argument("--singletons", type=int, default=200, help="people with one photo")
    parser.add_argument("--max-per-person", type=int, default=8, help="photos of each person at most")
    parser.add_argument("--all", action="store_true", help="every LFW photo")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "cluster_lfw")
    args = parser.parse_args()

    chosen = choose(args.data / "images", args.people, args.singletons, args.max_per_person, args.all)
    photos = [p for p, _ in chosen]
    truth_all = np.array([n for _, n in chosen])
    recognizer = FaceRecognizer(threads=args.threads)
    start = time.perf_counter()
    cached = CACHE.is_file()
    embeddings, ok = embed(recognizer, photos)
    embed_seconds = time.perf_counter() - start
    cached = cached and embed_seconds < 5.0
    x, truth = embeddings[ok], truth_all[ok]
    card = recognizer.card
    runs = [
        ("average", card.threshold, "average linkage, verification threshold"),
        ("average", card.open_set_threshold, "average linkage, identification threshold"),
        ("components", card.threshold, "connected components, verification threshold"),
        ("components", card.open_set_threshold, "connected components, identification threshold"),
        ("hdbscan", None, "HDBSCAN (scikit-learn, min_cluster_size 2)"),
    ]
    dev_x, dev_truth = dev_split(recognizer, TRAIN_PACK)
    print("dev split of the training pack (where the default is chosen):", flush=True)
    dev_rows = evaluate(dev_x, dev_truth, runs)
    print("LFW:", flush=True)
    rows = evaluate(x, truth, runs)
    people, counts = np.unique(truth, return_counts=True)
    meta = {
        "subset": "all of LFW" if args.all else
        f"{args.people} people with 2+ photos (at most {args.max_per_person} each) + {args.singletons} "
        "people with one photo, spread evenly over LFW's alphabetical list",
        "photos": len(photos), "faces": int(ok.sum()), "no_face": int((~ok).sum()),
        "people": int(len(people)), "people_with_2_or_more": int(np.sum(counts >= 2)),
        "same_person_pairs": int(np.sum(counts * (counts - 1) // 2)),
        "dev_faces": int(len(dev_truth)), "dev_people": int(len(np.unique(dev_truth))),
        "model": card.name, "fingerprint": card.fingerprint[:12],
        "verification_threshold": card.threshold, "identification_threshold": card.open_set_threshold,
        "embed_seconds": round(embed_seconds, 1), "cached": bool(cached), "platform": platform.platform(),
        "cpus": os.cpu_count(), "load_average_at_end": [round(v, 2) for v in os.getloadavg()],
        "command": "python benchmarks/cluster_lfw.py" + (" --all" if args.all else
                   f" --people {args.people} --singletons {args.singletons} --max-per-person {args.max_per_person}"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = {"meta": meta, "dev": dev_rows, "lfw": rows}
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    args.out.with_suffix(".md").write_text(markdown(meta, rows, dev_rows))
    print(markdown(meta, rows, dev_rows))


def table(rows: list[dict]) -> list[str]:
    lines = [
        "| method | threshold | pairwise precision | pairwise recall | F1 | groups (true people) | groups of 2+ "
        "| largest | people kept whole | seconds |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        threshold = "—" if r["threshold"] is None else f"{r['threshold']:.4f}"
        lines.append(
            f"| {r['label']} | {threshold} | {r['precision']:.4f} | {r['recall']:.4f} | {r['f1']:.4f} "
            f"| {r['groups']} ({r['people']}) | {r['groups_of_2_or_more']} | {r['largest_group']} "
            f"| {100 * r['whole_people']:.1f}% | {r['seconds']} |"
        )
    return lines


def markdown(meta: dict, rows: list[dict], dev_rows: list[dict]) -> str:
    lines = [
        "# Clustering faces by person",
        "",
        "## The training pack's dev split (where `facegnet cluster`'s default was chosen)",
        "",
        f"{meta['dev_faces']} aligned dev faces of {meta['dev_people']} CelebA people (never LFW), embedded "
        "directly (no detection).",
        "",
        *table(dev_rows),
        "",
        "## LFW (a test: nothing chosen here)",
        "",
        f"`{meta['command']}`: {meta['subset']}; {meta['photos']} photos, {meta['faces']} with a face "
        f"({meta['no_face']} without), {meta['people']} people ({meta['people_with_2_or_more']} with two or more "
        f"faces, {meta['same_person_pairs']:,} same-person pairs). Model {meta['model']} ({meta['fingerprint']}); "
        "thresholds from its card, not tuned on LFW.",
        "",
        *table(rows),
        "",
        "People kept whole: of the people with two or more faces, the share whose faces are all in one group "
        "with nobody else. Seconds: the grouping only; "
        + (f"embedding the photos took {meta['embed_seconds']} s" if not meta.get("cached") else
           "the LFW embeddings came from runs/'s cache of an earlier run of the same photos and weights")
        + ". Load average at the end: "
        + ", ".join(map(str, meta["load_average_at_end"]))
        + " on " + str(meta["cpus"]) + " CPUs (a training run shared the CPU: times are pessimistic).",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
