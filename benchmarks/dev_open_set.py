#!/usr/bin/env python3
"""Does the per-search threshold hold its rate when people have several photos? Measured on the dev split only.

A search compares a stranger with every enrolled *template* and names the person of the best one, so a person
enrolled from k photos gives a stranger up to k chances. This script measures how many: on the training pack's
dev faces (never LFW) it enrols dev people with k photos each (k = 1, 2, 4, 8) in random splits, searches every
face of the people left out as a stranger, and compares the share of strangers named with the rate the model
card's impostor tail predicts when the gallery's N counts people and when it counts templates. Per (stranger,
person) it also reports the effective number of independent chances among k photos, k_eff = P(max of k scores
>= t) / P(one score >= t), at several thresholds t: 1 when the photos' scores rise and fall together, k when
they are independent.

    python benchmarks/dev_open_set.py [--embeddings /tmp/dev_flip_fp32.npz]

``--embeddings FILE`` keeps the dev embeddings (flip, fp32) in a .npz file and reuses it when it exists.
Results: ``benchmarks/results/dev_open_set.{json,md}``. The impostor tail was fitted on the same dev faces,
so this checks the count of chances, not the tail's transfer to other photos.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from calibrate_procedures import DEFAULT_PACK, dev_faces, embedder_for  # noqa: E402
from calibrate_search_threshold import cpu_model  # noqa: E402

KS = (1, 2, 4, 8)
RATES = (0.01, 0.05, 0.2)
#: Thresholds at which k_eff is measured (per-comparison rates of about 1e-2 down to 2e-4 on dev).
LEVELS = (0.30, 0.35, 0.40, 0.45)


def load_embeddings(args: argparse.Namespace, card) -> tuple[np.ndarray, np.ndarray]:
    if args.embeddings is not None and args.embeddings.exists():
        saved = np.load(args.embeddings, allow_pickle=False)
        return saved["emb"].astype(np.float32), saved["ids"].astype(str)
    crops, ids, *_ = dev_faces(args.data)
    emb = embedder_for(card, True, "fp32")(crops)
    if args.embeddings is not None:
        np.savez(args.embeddings, emb=emb, ids=ids)
    return emb, ids


def k_eff(sims: np.ndarray, ids: np.ndarray, people: list[str], rng: np.random.Generator, repeats: int) -> dict:
    """Per (stranger face, person): P(max over k random photos >= t) / P(one random photo >= t)."""
    rows = {}
    maxima = {}
    for k in KS:
        chunks = []
        for _ in range(repeats):
            for p in people:
                mine = np.flatnonzero(ids == p)
                others = np.flatnonzero(ids != p)
                chunks.append(sims[np.ix_(others, rng.choice(mine, k, replace=False))].max(axis=1))
        maxima[k] = np.concatenate(chunks)
    for k in KS:
        rows[str(k)] = [{"t": t, "one": float((maxima[1] >= t).mean()), "max_of_k": float((maxima[k] >= t).mean()),
                         "k_eff": round(float((maxima[k] >= t).mean() / max((maxima[1] >= t).mean(), 1e-12)), 2)}
                        for t in LEVELS]
    return rows


def simulate(sims: np.ndarray, ids: np.ndarray, people: list[str], tail: dict, enrolled: int, splits: int,
             rng: np.random.Generator) -> list[dict]:
    """Open-set searches of dev strangers against galleries of dev people with k photos each."""
    from facegnet.gallery.search_threshold import search_threshold

    out = []
    for k in KS:
        best = []
        for _ in range(splits):
            chosen = rng.choice(people, enrolled, replace=False)
            templates = np.concatenate([rng.choice(np.flatnonzero(ids == p), k, replace=False) for p in chosen])
            strangers = np.flatnonzero(~np.isin(ids, chosen))
            best.append(sims[np.ix_(strangers, templates)].max(axis=1))
        best = np.concatenate(best)
        for rate in RATES:
            by_people = search_threshold(tail, enrolled, rate).threshold
            by_templates = search_threshold(tail, enrolled * k, rate).threshold
            out.append({"k": k, "people": enrolled, "templates": enrolled * k, "far_per_search": rate,
                        "searches": int(len(best)),
                        "threshold_people": round(by_people, 4),
                        "named_people": float((best >= by_people).mean()),
                        "threshold_templates": round(by_templates, 4),
                        "named_templates": float((best >= by_templates).mean())})
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_PACK, help="the training pack (dev split used)")
    parser.add_argument("--weights", default=None, help="card name or path (default: the shipped model)")
    parser.add_argument("--embeddings", type=Path, default=None, metavar="FILE.npz",
                        help="keep the dev embeddings here; reused when the file exists")
    parser.add_argument("--enrolled", type=int, default=18, help="dev people enrolled in each split")
    parser.add_argument("--splits", type=int, default=400, help="random splits per k")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "dev_open_set")
    args = parser.parse_args(argv)

    import torch

    from facegnet.card import resolve_card

    torch.set_num_threads(2)
    started = time.time()
    card = resolve_card(args.weights).for_procedure(True, "fp32")
    if not card.impostor_tail:
        raise SystemExit(f"{card.name}: the model card has no impostor_tail (run calibrate_search_threshold.py)")
    emb, ids = load_embeddings(args, card)
    sims = emb @ emb.T
    counts = {p: int((ids == p).sum()) for p in sorted(set(ids))}
    people = [p for p, n in counts.items() if n >= max(KS)]  # the same people for every k
    rng = np.random.default_rng(args.seed)
    report = {
        "command": "python benchmarks/dev_open_set.py"
                   + (f" --embeddings {args.embeddings}" if args.embeddings else ""),
        "weights": card.name,
        "sha256": card.fingerprint,
        "dev_faces": int(len(ids)),
        "dev_people": len(counts),
        "people_with_8_photos": len(people),
        "enrolled": args.enrolled,
        "splits": args.splits,
        "k_eff": k_eff(sims, ids, people, rng, repeats=20),
        "open_set": simulate(sims, ids, people, card.impostor_tail, args.enrolled, args.splits, rng),
        "cpu": cpu_model(),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }
    report["seconds"] = round(time.time() - started, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(report))
    print(markdown(report))
    return 0


def pct(v: float) -> str:
    return f"{100 * v:.2f}%"


def markdown(r: dict) -> str:
    lines = [
        f"# Strangers named when people have several photos (dev split, {r['weights']}, sha256 {r['sha256'][:12]}…)",
        "",
        f"`{r['command']}`: {r['dev_faces']} dev faces of {r['dev_people']} people (never LFW); {r['cpu']}, "
        f"{r['date']}, {r['seconds']} s.",
        "",
        f"Each split enrols {r['enrolled']} of the {r['people_with_8_photos']} dev people with at least 8 photos, "
        f"k random photos each, and searches every face of the other dev people as a stranger ({r['splits']} "
        "splits per k). Share of strangers named at the threshold the card's impostor tail gives for a "
        "per-search rate, with N counting people and with N counting templates:",
        "",
        "| k | per-search rate | searches | N = people: threshold | named | N = templates: threshold | named |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in r["open_set"]:
        lines.append(f"| {row['k']} | {pct(row['far_per_search'])} | {row['searches']} | {row['threshold_people']} "
                     f"| {pct(row['named_people'])} | {row['threshold_templates']} | {pct(row['named_templates'])} |")
    lines += ["", "Effective number of independent chances among a person's k photos, k_eff = P(max of k >= t) / "
              "P(one >= t), per (stranger face, person):", "",
              "| k | " + " | ".join(f"t = {t} (one: {pct(row['one'])})" for t, row in
                                   zip(LEVELS, r["k_eff"]["1"])) + " |",
              "|---|" + "---|" * len(LEVELS)]
    for k, rows in r["k_eff"].items():
        lines.append(f"| {k} | " + " | ".join(str(row["k_eff"]) for row in rows) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
