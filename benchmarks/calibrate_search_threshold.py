#!/usr/bin/env python3
"""The impostor-score tail behind the per-search threshold, from the training pack's dev split (never LFW).

For each embedding procedure ("flip:fp32", "noflip:fp32", "flip:int8", "noflip:int8") this embeds the dev
faces, scores every pair of faces of different people (~541,000 impostor pairs) and describes the upper tail
of those scores compactly: empirical quantiles down to an exceedance probability ``p_u`` (1e-3: 540 pairs lie
above it), and beyond ``p_u``, where the dev pairs run out, a fitted tail. Galleries read it to place their
threshold where a *search* of a stranger against all N enrolled templates names somebody with the chosen
probability (:mod:`facegnet.gallery.search_threshold`).

The tail is a generalised Pareto distribution (GPD) fitted by maximum likelihood to the scores above ``p_u``'s
quantile. Its fitted shape is negative (a bounded tail, ending near 0.61 for flip:fp32), an endpoint inferred
from 540 pairs that a gallery's own strangers need not respect; the card therefore holds the exponential tail
(shape 0, the GPD's conservative limit, scale = mean excess) and records the fitted shape beside it. The
deeper empirical quantiles (1e-4 down to 1e-5) are written beside the model's predictions as a check.

    python benchmarks/calibrate_search_threshold.py [--data ../shared/data/train] [--write-card]

``--write-card`` adds ``impostor_tail`` to each procedure's entry of the card's ``thresholds`` (and at the top
level for flip:fp32); no existing number is changed. Results: ``benchmarks/results/search_threshold.{json,md}``.
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from calibrate_procedures import DEFAULT_PACK, PROCEDURES, embedder_for  # noqa: E402

COMMAND = "python benchmarks/calibrate_search_threshold.py --write-card"
#: Exceedance probabilities of the stored empirical quantiles (down to P_U, where the fitted tail takes over).
QUANTILES = (0.1, 0.03, 0.01, 0.003, 0.001)
P_U = 1e-3
#: Deeper empirical quantiles, written beside the tail's predictions as a check of the fit.
CHECKS = (3e-4, 1e-4, 3e-5, 1e-5)
#: Gallery sizes (templates) whose per-search thresholds the report lists.
SIZES = (1, 10, 100, 1000, 1678, 10000, 100000)


def dev_crops(pack: Path) -> tuple[np.ndarray, np.ndarray]:
    """The dev split's crops (those of its rows and of its pairs) and their identities."""
    from facegnet.train import datasets as D

    manifest = D.read_manifest(pack)
    identity = {r["crop"]: r["identity"] for r in manifest}
    names = sorted({r["crop"] for r in manifest if r["split"] == "dev"}
                   | {p for a, b, _ in D.read_pairs(pack / "dev_pairs.csv") for p in (a, b)})
    return D.decode_crops([pack / n for n in names]), np.array([identity.get(n, f"?{n}") for n in names])


def impostor_scores(embeddings: np.ndarray, identities: np.ndarray) -> np.ndarray:
    """Cosine similarities of every pair of faces of different people, highest first."""
    sims = embeddings @ embeddings.T
    upper = np.triu_indices(len(embeddings), k=1)
    different = identities[upper[0]] != identities[upper[1]]
    return np.sort(sims[upper][different])[::-1]


def score_at(scores_desc: np.ndarray, p: float) -> float:
    """The lowest threshold (score >= t accepts) that accepts at most a fraction ``p`` of the scores."""
    allowed = int(math.floor(p * len(scores_desc)))
    return float(np.nextafter(scores_desc[min(allowed, len(scores_desc) - 1)], np.float32(np.inf)))


def describe_tail(scores_desc: np.ndarray) -> dict:
    """The compact description stored in the card (see the module docstring)."""
    from scipy.stats import genpareto

    n = len(scores_desc)
    u = score_at(scores_desc, P_U)
    excess = scores_desc[scores_desc >= u].astype(np.float64) - u
    xi, _, sigma_gpd = genpareto.fit(excess, floc=0)
    tail = {
        "model": "exponential",
        "u": round(u, 5),
        "p_u": P_U,
        "xi": 0.0,
        "sigma": round(float(excess.mean()), 5),
        "exceedances": int(len(excess)),
        "gpd_fitted": {"xi": round(float(xi), 4), "sigma": round(float(sigma_gpd), 5)},
    }
    return {
        "pairs": int(n),
        "quantiles": [[p, round(score_at(scores_desc, p), 5)] for p in QUANTILES],
        "tail": tail,
        "calibrated_on": "every pair of different people among the training pack's dev faces (never LFW)",
        "command": COMMAND,
    }


def check(desc: dict, scores_desc: np.ndarray) -> list[dict]:
    """The deeper empirical quantiles against the stored tail and the fitted GPD."""
    from facegnet.gallery.search_threshold import threshold_at

    gpd = {**desc, "tail": {**desc["tail"], **desc["tail"]["gpd_fitted"]}}
    return [{"p": p, "pairs_above": int(math.floor(p * len(scores_desc))),
             "empirical": round(score_at(scores_desc, p), 4), "exponential": round(threshold_at(desc, p), 4),
             "gpd": round(threshold_at(gpd, p), 4)} for p in CHECKS]


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        return platform.processor() or platform.machine()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_PACK, help="the training pack (dev split used)")
    parser.add_argument("--weights", default=None, help="card name or path (default: the shipped model)")
    parser.add_argument("--procedures", default=",".join(f"{'flip' if f else 'noflip'}:{n}" for f, n in PROCEDURES),
                        help="comma-separated procedure keys (default: all four)")
    parser.add_argument("--far", type=float, default=0.01, help="per-search false-alarm rate for the size table")
    parser.add_argument("--write-card", action="store_true", help="add impostor_tail to the card")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "search_threshold")
    args = parser.parse_args(argv)

    import torch

    from facegnet.card import resolve_card
    from facegnet.gallery.search_threshold import search_threshold

    torch.set_num_threads(args.threads)
    started = time.time()
    card = resolve_card(args.weights)
    crops, ids = dev_crops(args.data)
    wanted = args.procedures.split(",")
    results = {}
    for flip, numerics in PROCEDURES:
        key = f"{'flip' if flip else 'noflip'}:{numerics}"
        if key not in wanted:
            continue
        scores = impostor_scores(embedder_for(card, flip, numerics)(crops), ids)
        desc = describe_tail(scores)
        sizes = {str(n): round(search_threshold(desc, n, args.far).threshold, 4) for n in SIZES}
        results[key] = {"impostor_tail": desc, "check": check(desc, scores), "threshold_by_people": sizes,
                        "highest_impostor": round(float(scores[0]), 4)}
        tail = desc["tail"]
        print(f"{key}: u {tail['u']} sigma {tail['sigma']} (GPD xi {tail['gpd_fitted']['xi']}); "
              f"thresholds for {args.far:g} per search: {sizes}", flush=True)
    report = {
        "command": COMMAND,
        "weights": card.name,
        "sha256": card.fingerprint,
        "dev_faces": int(len(crops)),
        "far_per_search": args.far,
        "cpu": cpu_model(),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "seconds": round(time.time() - started, 1),
        "procedures": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(report))
    print(markdown(report))
    if args.write_card:
        path = card.path
        data = json.loads(path.read_text())
        for key, r in results.items():
            data.setdefault("thresholds", {}).setdefault(key, {})["impostor_tail"] = r["impostor_tail"]
        if "flip:fp32" in results:
            data["impostor_tail"] = results["flip:fp32"]["impostor_tail"]
        path.write_text(json.dumps(data, indent=2) + "\n")
        print(f"impostor tails written to {path}")
    return 0


def markdown(r: dict) -> str:
    lines = [
        f"# Impostor-score tails and per-search thresholds ({r['weights']}, sha256 {r['sha256'][:12]}…)",
        "",
        f"`{r['command']}`: {r['dev_faces']} dev faces of the training pack (never LFW); {r['cpu']}, {r['date']}, "
        f"{r['seconds']} s.",
        "",
        f"Threshold at which a stranger's search against N enrolled templates (photos) names somebody with probability "
        f"{r['far_per_search']:g}:",
        "",
        "| procedure | " + " | ".join(f"N = {n}" for n in SIZES) + " | highest dev impostor |",
        "|---|" + "---|" * (len(SIZES) + 1),
    ]
    for key, p in r["procedures"].items():
        lines.append(f"| {key} | " + " | ".join(str(p["threshold_by_people"][str(n)]) for n in SIZES)
                     + f" | {p['highest_impostor']} |")
    lines += ["", "Beyond the dev pairs: empirical quantiles against the exponential tail (stored) and the "
              "fitted GPD (its bounded tail is not used):", "",
              "| procedure | exceedance p | dev pairs above | empirical | exponential | GPD |",
              "|---|---|---|---|---|---|"]
    for key, p in r["procedures"].items():
        for c in p["check"]:
            lines.append(f"| {key} | {c['p']:g} | {c['pairs_above']} | {c['empirical']} | {c['exponential']} "
                         f"| {c['gpd']} |")
        t = p["impostor_tail"]["tail"]
        lines.append(f"| {key} | tail above u = {t['u']} (p_u {t['p_u']:g}) | {t['exceedances']} | | "
                     f"σ {t['sigma']} | ξ {t['gpd_fitted']['xi']}, σ {t['gpd_fitted']['sigma']} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
