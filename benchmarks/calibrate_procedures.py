#!/usr/bin/env python3
"""Thresholds per embedding procedure, calibrated on the training pack's dev split (never LFW).

A procedure is weights + flip test-time augmentation on/off + numerics (fp32: PyTorch or ONNX Runtime, which
agree to a cosine ≥ 0.9999; int8: ONNX Runtime quantized with the ranges shipped beside the weights). For each of
"flip:fp32", "noflip:fp32", "flip:int8", "noflip:int8" this embeds the dev crops, places the verification
threshold at the card's dev FAR on the 6,000 dev pairs and the identification threshold at its FAR over *all*
pairs of dev faces (as ``facegnet.train.release`` does for flip:fp32), and reports the dev accuracy, AUC and TAR
of each, with the embedding time per face, so the cost of flip can be weighed against its gain.

    python benchmarks/calibrate_procedures.py [--data ../shared/data/train] [--ranges] [--write-card]

``--ranges`` first measures the int8 activation ranges on 256 train-split crops and writes them beside the
weights (``facegnet/weights/<name>.int8-ranges.json``: what lets an installed user run int8 without the pack).
``--write-card`` stores the thresholds in the card's ``thresholds`` field. Results:
``benchmarks/results/procedures.{json,md}``.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DEFAULT_PACK = HERE.parent.parent / "shared" / "data" / "train"
PROCEDURES = [(True, "fp32"), (False, "fp32"), (True, "int8"), (False, "int8")]


def round_up(value: float, digits: int = 5) -> float:
    """Thresholds are rounded up, so rounding never admits more false accepts than targeted (as train.export)."""
    return math.ceil(float(value) * 10**digits) / 10**digits


def dev_faces(pack: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Dev crops, their identities, and the dev pairs as indices into them with the truth."""
    from facegnet.train import datasets as D

    rows = [r for r in D.read_manifest(pack) if r["split"] == "dev"]
    pairs = D.read_pairs(pack / "dev_pairs.csv")
    names = sorted({r["crop"] for r in rows} | {p for a, b, _ in pairs for p in (a, b)})
    where = {n: i for i, n in enumerate(names)}
    identity = {r["crop"]: r["identity"] for r in D.read_manifest(pack)}
    crops = D.decode_crops([pack / n for n in names])
    ids = np.array([identity.get(n, f"?{n}") for n in names])
    a = np.array([where[p[0]] for p in pairs])
    b = np.array([where[p[1]] for p in pairs])
    same = np.array([p[2] for p in pairs], dtype=bool)
    return crops, ids, a, b, same


def embedder_for(card, flip: bool, numerics: str):
    from facegnet.embed import Embedder

    if numerics == "fp32":
        return Embedder(card, flip=flip, batch_size=128)
    from facegnet.deploy.exporter import cached_onnx
    from facegnet.deploy.onnx_embedder import OnnxEmbedder

    return OnnxEmbedder(card, model=cached_onnx(card, int8=True), flip=flip, batch_size=128)


def calibrate(card, crops, ids, a, b, same, flip: bool, numerics: str, far: float, identify_far: float) -> dict:
    from facegnet.evaluation import metrics
    from facegnet.train.evaluate import pair_scores

    embed = embedder_for(card, flip, numerics)
    assert embed.numerics == numerics, (embed.numerics, numerics)
    embed(crops[:8])  # warm-up
    start = time.perf_counter()
    emb = embed(crops)
    ms_per_face = (time.perf_counter() - start) * 1000 / len(crops)
    sims = (emb[a] * emb[b]).sum(1)
    scores = pair_scores(sims, same)
    threshold = metrics.threshold_at_far(sims, same, far)
    # Identification: every pair of dev faces (~500k impostor pairs) places a threshold at a small FAR.
    all_sims = emb @ emb.T
    upper = np.triu_indices(len(emb), k=1)
    genuine = ids[upper[0]] == ids[upper[1]]
    values = all_sims[upper]
    tar_id, th_id = metrics.tar_at_far(values, genuine, identify_far)
    return {
        "threshold": round_up(threshold),
        "threshold_far": far,
        "identify_threshold": round_up(th_id),
        "identify_threshold_far": identify_far,
        "dev": scores,
        "dev_all_pairs": {"impostor_pairs": int((~genuine).sum()), "genuine_pairs": int(genuine.sum()),
                          "tar_at_identify_threshold": round(float(tar_id), 5)},
        "ms_per_face_batch128": round(ms_per_face, 3),
        "calibrated_on": "the training pack's dev split (dev_pairs.csv; all pairs of dev faces for identify)",
        "command": "python benchmarks/calibrate_procedures.py --write-card",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_PACK, help="the training pack (dev split used)")
    parser.add_argument("--weights", default=None, help="card name or path (default: the shipped model)")
    parser.add_argument("--ranges", action="store_true", help="measure and write the int8 activation ranges first")
    parser.add_argument("--write-card", action="store_true", help="store the thresholds in the card")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "procedures")
    args = parser.parse_args(argv)

    import torch

    from facegnet.card import resolve_card
    from facegnet.deploy.exporter import CALIBRATION_COUNT, calibration_crops, shipped_ranges, write_int8_ranges

    torch.set_num_threads(args.threads)
    card = resolve_card(args.weights)
    if args.ranges:
        out = card.weights_path.with_name(card.weights_path.stem + ".int8-ranges.json")
        write_int8_ranges(card, calibration_crops(args.data, CALIBRATION_COUNT, card.input_size), out)
        print(f"int8 ranges: {out} ({out.stat().st_size / 1e3:.1f} kB)")
    if shipped_ranges(card) is None:
        raise SystemExit("no int8 ranges ship with these weights: run with --ranges first")
    crops, ids, a, b, same = dev_faces(args.data)
    far = float(card.threshold_far or 1e-2)
    identify_far = float(card.identify_threshold_far or 1e-3)
    results = {}
    for flip, numerics in PROCEDURES:
        key = f"{'flip' if flip else 'noflip'}:{numerics}"
        results[key] = calibrate(card, crops, ids, a, b, same, flip, numerics, far, identify_far)
        r = results[key]
        print(f"{key}: threshold {r['threshold']} identify {r['identify_threshold']} dev acc {r['dev']['accuracy']} "
              f"auc {r['dev']['auc']} tar@1e-2 {r['dev']['tar@far1e-2']} ({r['ms_per_face_batch128']} ms/face)")
    report = {
        "weights": card.name,
        "sha256": card.fingerprint,
        "dev_faces": int(len(crops)),
        "dev_pairs": int(len(same)),
        "threads": args.threads,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "note": "times taken while a training run shared the 2-core CPU are pessimistic",
        "procedures": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        f"# Thresholds per embedding procedure ({card.name}, sha256 {card.fingerprint[:12]}…)",
        "",
        f"`python benchmarks/calibrate_procedures.py --write-card`; the pack's dev split: {len(same)} pairs, "
        f"{len(crops)} faces. Verification threshold at dev FAR {far:g}, identification at {identify_far:g} over "
        "all pairs of dev faces. Never LFW. Times: batch 128, "
        f"{args.threads} threads (pessimistic when a training run shares the CPU).",
        "",
        "| procedure | threshold | identify threshold | dev accuracy | dev AUC | TAR @ FAR 1e-2 | TAR @ FAR 1e-3 "
        "| ms per face |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for key, r in results.items():
        d = r["dev"]
        lines.append(f"| {key} | {r['threshold']} | {r['identify_threshold']} | {d['accuracy']:.2%} | {d['auc']:.4f} "
                     f"| {d['tar@far1e-2']:.2%} | {d['tar@far1e-3']:.2%} | {r['ms_per_face_batch128']} |")
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    if args.write_card:
        path = card.path
        data = json.loads(path.read_text())
        kept = data.get("thresholds", {})  # other keys of an entry (impostor_tail: calibrate_search_threshold.py)
        data["thresholds"] = {k: {**kept.get(k, {}), **{f: v[f] for f in (
            "threshold", "threshold_far", "identify_threshold", "identify_threshold_far", "dev", "dev_all_pairs",
            "command")}} for k, v in results.items()}
        path.write_text(json.dumps(data, indent=2) + "\n")
        print(f"thresholds written to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
