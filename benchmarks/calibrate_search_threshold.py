#!/usr/bin/env python3
"""The impostor-score tail behind the per-search threshold: every pair of different people among the dev faces
of the training pack (never LFW photos or LFW people).

For each embedding procedure ("flip:fp32", "noflip:fp32", "flip:int8", "noflip:int8") this scores impostor pairs
and describes the upper tail of those scores compactly: empirical quantiles down to an exceedance probability
``p_u``, and beyond ``p_u`` a fitted tail. Galleries read it to place their threshold where a *search* of
a stranger against all N enrolled templates names somebody with the chosen probability
(:mod:`facegnet.gallery.search_threshold`); at N = 1,678 and 1% per search that is a per-comparison rate of
6e-6, far below what the dev pairs reach (1e-3 with 540 pairs above).

The impostor pairs are every pair of faces of different people among the dev split's 1,053 faces of 53 people
(540,986 pairs). Their quantiles are stored down to ``p_u`` = 1e-3 (:data:`P_U`), and the tail beyond is fitted
to the scores above it: exponential (scale: the mean excess) when the generalised Pareto fit's shape is negative,
as on the dev pairs (a bounded tail is an inference no gallery's strangers need respect, so the exponential, its
conservative limit, is stored and the fit recorded beside it), and that GPD when the shape is positive (heavier
than any exponential). Deeper empirical quantiles are written beside the tail's predictions. (A deeper tail from
stranger photos did not qualify: ``docs/training.md``, "What did not help".)

    python benchmarks/calibrate_search_threshold.py [--weights CARD] [--write-card]

``--write-card`` sets ``impostor_tail`` in each procedure's entry of the card's ``thresholds`` (and at the top
level for flip:fp32); no other number is changed. Results: ``benchmarks/results/search_threshold.{json,md}``
(``--out`` another name). Run it after every release (``docs/training.md``): ``facegnet.train.release`` writes
the card's thresholds but not its tail, and without a tail a gallery falls back to the card's fixed
identification threshold.
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from calibrate_procedures import DEFAULT_PACK, PROCEDURES, embedder_for  # noqa: E402

#: Exceedance probabilities of the empirical quantiles: stored down to P_U, reported as deep as the pairs allow.
GRID = (0.1, 0.03, 0.01, 0.003, 0.001, 3e-4, 1e-4, 3e-5, 1e-5, 3e-6, 1e-6, 3e-7, 1e-7, 3e-8, 1e-8)
#: The dev quantiles are stored down to P_U, where the fitted tail takes over.
P_U = 1e-3
#: Gallery sizes (templates) whose per-search thresholds the report lists.
SIZES = (1, 10, 100, 1000, 1678, 10000, 100000)


@dataclass
class Impostors:
    """The upper part of a population's impostor scores (highest first) and how many pairs it has in all."""

    top: np.ndarray
    pairs: int
    faces: int

    def score_at(self, p: float) -> float | None:
        """The lowest threshold (score >= t accepts) accepting at most a fraction ``p`` of the pairs (None
        where the kept scores do not reach)."""
        allowed = int(math.floor(p * self.pairs))
        if allowed >= len(self.top):
            return None
        return float(np.nextafter(self.top[allowed], np.float32(np.inf)))

    def above(self, p: float) -> int:
        """How many pairs lie above the quantile at exceedance probability ``p``."""
        return int(math.floor(p * self.pairs))


def dev_crops(pack: Path) -> tuple[np.ndarray, np.ndarray]:
    """The dev split's crops (those of its rows and of its pairs) and their identities."""
    from facegnet.train import datasets as D

    manifest = D.read_manifest(pack)
    identity = {r["crop"]: r["identity"] for r in manifest}
    names = sorted({r["crop"] for r in manifest if r["split"] == "dev"}
                   | {p for a, b, _ in D.read_pairs(pack / "dev_pairs.csv") for p in (a, b)})
    return D.decode_crops([pack / n for n in names]), np.array([identity.get(n, f"?{n}") for n in names])


def impostor_scores(embeddings: np.ndarray, identities: np.ndarray) -> Impostors:
    """Cosine similarities of every pair of faces of different people."""
    sims = embeddings @ embeddings.T
    upper = np.triu_indices(len(embeddings), k=1)
    different = identities[upper[0]] != identities[upper[1]]
    scores = np.sort(sims[upper][different])[::-1]
    return Impostors(scores, len(scores), len(embeddings))


def fitted_tail(imp: Impostors, p_u: float) -> dict:
    """The tail above the population's ``p_u`` quantile: exponential (scale = mean excess) when the generalised
    Pareto fit's shape is not positive (the exponential is then the conservative limit), else that GPD (a heavier
    tail than any exponential); the GPD's fit is recorded beside it either way."""
    from scipy.stats import genpareto

    u = imp.score_at(p_u)
    excess = imp.top[imp.top >= u].astype(np.float64) - u
    xi, _, sigma_gpd = genpareto.fit(excess, floc=0)
    fit = {"xi": round(float(xi), 4), "sigma": round(float(sigma_gpd), 5)}
    shape = {"model": "exponential", "xi": 0.0, "sigma": round(float(excess.mean()), 5)} if xi <= 0 else \
        {"model": "gpd", **fit}
    return {"model": shape["model"], "u": round(u, 5), "p_u": p_u, "xi": shape["xi"], "sigma": shape["sigma"],
            "exceedances": int(len(excess)), "gpd_fitted": fit}


def describe_tail(dev: Impostors, command: str, calibrated_on: str) -> dict:
    """The compact description stored in the card: the dev quantiles down to P_U and the tail fitted beyond (see
    the module docstring)."""
    quantiles = [[p, round(dev.score_at(p), 5)] for p in GRID if p >= P_U]
    return {"pairs": int(dev.pairs), "quantiles": quantiles, "tail": fitted_tail(dev, P_U),
            "calibrated_on": calibrated_on, "command": command}


def check(desc: dict, imp: Impostors) -> list[dict]:
    """Deeper empirical quantiles (at least 5 pairs above) against the stored tail and the fitted GPD."""
    from facegnet.gallery.search_threshold import threshold_at

    gpd = {**desc, "tail": {**desc["tail"], **desc["tail"]["gpd_fitted"]}}
    p_u = desc["tail"]["p_u"]
    return [{"p": p, "pairs_above": imp.above(p), "empirical": round(imp.score_at(p), 4),
             "stored": round(threshold_at(desc, p), 4), "gpd": round(threshold_at(gpd, p), 4)}
            for p in GRID if p < p_u and imp.above(p) >= 5 and imp.score_at(p) is not None]


def population_table(imp: Impostors) -> dict[str, float]:
    """The population's own empirical quantiles, where at least 5 pairs lie above."""
    return {f"{p:g}": round(imp.score_at(p), 4) for p in GRID if imp.above(p) >= 5 and imp.score_at(p) is not None}


def cpu_model() -> str:
    """The CPU's model name (lscpu), for the results."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        return platform.processor() or platform.machine()


def command_of(args: argparse.Namespace) -> str:
    """The command line that reproduces this run, without the options left at their defaults."""
    parts = ["python benchmarks/calibrate_search_threshold.py"]
    if args.data != DEFAULT_PACK:
        parts.append(f"--data {args.data}")
    if args.weights:
        parts.append(f"--weights {args.weights}")
    if args.procedures != ",".join(f"{'flip' if f else 'noflip'}:{n}" for f, n in PROCEDURES):
        parts.append(f"--procedures {args.procedures}")
    if args.out != HERE / "results" / "search_threshold":
        parts.append(f"--out {args.out.relative_to(HERE.parent) if args.out.is_relative_to(HERE.parent) else args.out}")
    if args.write_card:
        parts.append("--write-card")
    return " ".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_PACK, help="the training pack (dev split used)")
    parser.add_argument("--weights", default=None, help="card name or path (default: the shipped model)")
    parser.add_argument("--procedures", default=",".join(f"{'flip' if f else 'noflip'}:{n}" for f, n in PROCEDURES),
                        help="comma-separated procedure keys (default: all four)")
    parser.add_argument("--far", type=float, default=0.01, help="per-search false-alarm rate for the size table")
    parser.add_argument("--write-card", action="store_true", help="set impostor_tail in the card")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "search_threshold")
    args = parser.parse_args(argv)

    import torch

    from facegnet.card import resolve_card
    from facegnet.gallery.search_threshold import search_threshold

    torch.set_num_threads(args.threads)
    started = time.time()
    card = resolve_card(args.weights)
    command = command_of(args)
    crops, ids = dev_crops(args.data)
    wanted = args.procedures.split(",")
    calibrated_on = f"every pair of different people among the training pack's {len(crops)} dev faces; never LFW"
    results = {}
    for flip, numerics in PROCEDURES:
        key = f"{'flip' if flip else 'noflip'}:{numerics}"
        if key not in wanted:
            continue
        embed = embedder_for(card, flip, numerics)
        dev = impostor_scores(embed(crops), ids)
        desc = describe_tail(dev, command, calibrated_on)
        sizes = {str(n): round(search_threshold(desc, n, args.far).threshold, 4) for n in SIZES}
        results[key] = {
            "impostor_tail": desc,
            "check": check(desc, dev),
            "threshold_by_templates": sizes,
            "dev_quantiles": population_table(dev),
            "highest_dev_impostor": round(float(dev.top[0]), 4),
        }
        tail = desc["tail"]
        print(f"{key}: p_u {tail['p_u']:g} u {tail['u']} sigma {tail['sigma']} (GPD xi {tail['gpd_fitted']['xi']}); "
              f"thresholds for {args.far:g} per search: {sizes}", flush=True)
    report = {
        "command": command,
        "weights": card.name,
        "sha256": card.fingerprint,
        "dev_faces": int(len(crops)),
        "dev_pairs": int(dev.pairs),
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
    """The report: the per-search thresholds by gallery size, the dev quantiles and the tail against the deeper
    empirical quantiles."""
    lines = [
        f"# Impostor-score tails and per-search thresholds ({r['weights']}, sha256 {r['sha256'][:12]}…)",
        "",
        f"`{r['command']}`: {r['dev_faces']} dev faces of the training pack ({r['dev_pairs']:,} impostor pairs); "
        f"never LFW; {r['cpu']}, {r['date']}, {r['seconds']} s.",
        "",
        f"Threshold at which a stranger's search against N enrolled templates (photos) names somebody with probability "
        f"{r['far_per_search']:g} (per-comparison rate about {r['far_per_search']:g} / N), from the card's tail:",
        "",
        "| procedure | tail | " + " | ".join(f"N = {n}" for n in SIZES) + " |",
        "|---|---|" + "---|" * len(SIZES),
    ]
    for key, p in r["procedures"].items():
        lines.append(f"| {key} | card | " + " | ".join(str(p["threshold_by_templates"][str(n)]) for n in SIZES) + " |")
    probs = sorted({q for p in r["procedures"].values() for q in p["dev_quantiles"]}, key=lambda q: -float(q))
    lines += ["", "Empirical quantiles of each population (score exceeded by a fraction p of its pairs; at least 5 "
              "pairs above):", "",
              "| procedure | population | " + " | ".join(f"p = {q}" for q in probs) + " |",
              "|---|---|" + "---|" * len(probs)]
    for key, p in r["procedures"].items():
        lines.append(f"| {key} | dev pairs | " + " | ".join(str(p["dev_quantiles"].get(q, "")) for q in probs) + " |")
    lines += ["", "Beyond p_u: the deeper empirical quantiles against the stored tail and the fitted GPD:", "",
              "| procedure | exceedance p | pairs above | empirical | stored tail | GPD |",
              "|---|---|---|---|---|---|"]
    for key, p in r["procedures"].items():
        for c in p["check"]:
            lines.append(f"| {key} | {c['p']:g} | {c['pairs_above']} | {c['empirical']} | {c['stored']} "
                         f"| {c['gpd']} |")
        t = p["impostor_tail"]["tail"]
        lines.append(f"| {key} | tail above u = {t['u']} (p_u {t['p_u']:g}) | {t['exceedances']} | | "
                     f"{t['model']}, σ {t['sigma']} | ξ {t['gpd_fitted']['xi']}, σ {t['gpd_fitted']['sigma']} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
