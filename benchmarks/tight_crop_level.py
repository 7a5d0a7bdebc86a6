#!/usr/bin/env python3
"""How much of an aligned crop may lie outside its photo before impostor scores rise: the level behind
``facegnet.detection.quality.TIGHT_CROP``, measured on the training pack's dev faces (never LFW people's scores).

A photo cut close to the face leaves part of its aligned 112×112 crop outside the photo, where the warp fills
black (:func:`facegnet.align.outside_share`). Each dev crop is cut as a photo of that share would cut it: a
rectangle holding the five landmarks with a margin, placed and shaped at random (aspect 0.8–1.25), whose
outside is blackened; re-aligning such a photo gives exactly this crop, and the share is measured with
``outside_share`` itself. For each share the dev impostor quantiles (every pair of faces of different people,
embedded as a search embeds them: flip, fp32) are compared with the uncut crops': with both faces of a pair cut
(a gallery enrolled from such photos, searched with such photos) and with one cut (a tight probe against whole
photos). The level is the largest share whose both-cut quantiles at p = 1e-2 and 1e-3 stay within ``MARGIN``
(0.02) of the uncut ones.

For scale, the same shares of LFW photos (250×250, whole) as they are and cut to MTCNN's box widened by a
margin on each side (only the share is measured on them: LFW is for evaluation).

    python benchmarks/tight_crop_level.py [--lfw-photos 60]

Results: ``benchmarks/results/tight_crop_level.{json,md}``.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from calibrate_procedures import DEFAULT_PACK  # noqa: E402
from calibrate_search_threshold import dev_crops, impostor_scores  # noqa: E402
from host_info import run_line, run_record, write_result  # noqa: E402

LEVELS = (0.05, 0.10, 0.15, 0.20, 0.25, 0.30, 0.40, 0.50)
P = (1e-2, 1e-3, 1e-4)
MARGIN = 0.02
#: Pixels the cut keeps around the landmarks (a photo always holds the eyes and the mouth).
LANDMARK_MARGIN = 6
LFW = HERE.parent.parent / "shared" / "data" / "lfw" / "images"
#: Margins (share of the box side, each side) the LFW photos are cut to.
BOX_MARGINS = (0.0, 0.1, 0.2, 0.3, 0.5)


def cut(crops: np.ndarray, share: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Each crop cut as a photo leaving ``share`` of its aligned crop outside would cut it, and the measured
    share of each (:func:`facegnet.align.outside_share` of the photo and its landmarks)."""
    from facegnet.align import CROP_SIZE, TEMPLATE, outside_share

    size = crops.shape[1]
    low, high = TEMPLATE.min(axis=0) - LANDMARK_MARGIN, TEMPLATE.max(axis=0) + LANDMARK_MARGIN
    out, shares = np.zeros_like(crops), np.empty(len(crops))
    for i, crop in enumerate(crops):
        aspect = float(np.exp(rng.uniform(np.log(0.8), np.log(1.25))))
        area = (1.0 - share) * size * size
        width = int(np.clip(round(np.sqrt(area * aspect)), high[0] - low[0], size))
        height = int(np.clip(round(area / width), high[1] - low[1], size))
        width = int(np.clip(round(area / height), high[0] - low[0], size))  # where the height was clipped
        x0 = int(rng.integers(max(0, int(np.ceil(high[0])) - width), min(size - width, int(low[0])) + 1))
        y0 = int(rng.integers(max(0, int(np.ceil(high[1])) - height), min(size - height, int(low[1])) + 1))
        out[i, y0 : y0 + height, x0 : x0 + width] = crop[y0 : y0 + height, x0 : x0 + width]
        shares[i] = outside_share((height, width), TEMPLATE * (size / CROP_SIZE) - (x0, y0), size)
    return out, shares


def cross_impostors(cut_emb: np.ndarray, whole_emb: np.ndarray, ids: np.ndarray):
    """Impostor scores of cut faces against whole ones (both orders of each pair of different people)."""
    from calibrate_search_threshold import Impostors

    sims = cut_emb @ whole_emb.T
    different = ids[:, None] != ids[None, :]
    scores = np.sort(sims[different])[::-1]
    return Impostors(scores, len(scores), len(cut_emb))


def quantiles(impostors) -> dict[str, float]:
    return {f"{p:g}": round(float(impostors.score_at(p)), 4) for p in P}


def lfw_shares(recognizer, photos: int, rng: np.random.Generator) -> dict:
    """Shares of LFW photos as they are and cut to the detected box widened by each of BOX_MARGINS."""
    from facegnet.align import outside_share
    from facegnet.io import load_image

    paths = sorted(LFW.glob("*/*.jpg"))
    chosen = [paths[i] for i in sorted(rng.choice(len(paths), photos, replace=False))]
    table: dict[str, list[float]] = {"whole": []} | {f"box+{m:g}": [] for m in BOX_MARGINS}
    for path in chosen:
        image = load_image(path)
        faces = recognizer.detect(image)
        if not faces:
            continue
        face = faces[0]
        table["whole"].append(outside_share(image.shape, face.landmarks))
        for m in BOX_MARGINS:
            x1, y1, x2, y2 = face.box
            pad_x, pad_y = m * (x2 - x1), m * (y2 - y1)
            left, top = max(0, int(x1 - pad_x)), max(0, int(y1 - pad_y))
            right, bottom = min(image.shape[1], int(np.ceil(x2 + pad_x))), min(image.shape[0], int(np.ceil(y2 + pad_y)))
            found = recognizer.detect(image[top:bottom, left:right])
            if found:
                table[f"box+{m:g}"].append(outside_share((bottom - top, right - left), found[0].landmarks))
    return {k: {"faces": len(v), "median": round(float(np.median(v)), 3),
                "p10": round(float(np.percentile(v, 10)), 3), "p90": round(float(np.percentile(v, 90)), 3)}
            for k, v in table.items() if v}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_PACK, help="the training pack (dev split used)")
    parser.add_argument("--lfw-photos", type=int, default=60, help="LFW photos whose shares are listed")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "tight_crop_level")
    args = parser.parse_args(argv)
    from facegnet import FaceRecognizer

    start = time.time()
    rng = np.random.default_rng(args.seed)
    recognizer = FaceRecognizer(min_face_size=20)
    lfw = lfw_shares(recognizer, args.lfw_photos, rng)
    crops, ids = dev_crops(args.data)
    black = float((crops.max(axis=-1) == 0).mean())
    whole = recognizer.embed_crops(crops)
    base = quantiles(impostor_scores(whole, ids))
    rows = []
    for level in LEVELS:
        cut_crops, shares = cut(crops, level, rng)
        emb = recognizer.embed_crops(cut_crops)
        both, one = quantiles(impostor_scores(emb, ids)), quantiles(cross_impostors(emb, whole, ids))
        rows.append({"level": level, "share_mean": round(float(shares.mean()), 4),
                     "both_cut": both, "one_cut": one,
                     "gap_both": {p: round(both[p] - base[p], 4) for p in base},
                     "gap_one": {p: round(one[p] - base[p], 4) for p in base}})
        print(rows[-1], flush=True)
    within = [r["level"] for r in rows if all(abs(r["gap_both"][f"{p:g}"]) <= MARGIN for p in P[:2])]
    chosen = 0.0
    for r in rows:  # the largest level below the first that leaves the margin
        if r["level"] not in within:
            break
        chosen = r["level"]
    command = "python benchmarks/tight_crop_level.py" + (f" --lfw-photos {args.lfw_photos}"
                                                         if args.lfw_photos != 60 else "")
    result = {**run_record(command), "seconds": round(time.time() - start, 1), "dev_faces": len(crops),
              "procedure": recognizer.procedure, "black_in_uncut": round(black, 4), "uncut": base, "levels": rows,
              "margin": MARGIN, "level_chosen": chosen, "lfw_shares": lfw}
    lines = [f"# How tight a photo may be cut ({recognizer.card.name})", "",
             run_line(result) + f" {result['seconds']} s.", "",
             f"{len(crops)} dev faces of the training pack, every impostor pair; each crop cut as a photo leaving the "
             f"given share of its aligned crop outside (black) would cut it. The uncut dev crops hold "
             f"{black:.1%} black pixels already. Gap: the cut crops' impostor quantile minus the uncut ones'.", "",
             "| share outside (asked / measured) | both cut p=1e-2 | 1e-3 | 1e-4 | gap 1e-2 | gap 1e-3 | gap 1e-4 "
             "| one cut gap 1e-2 | 1e-3 | 1e-4 |", "|---|---|---|---|---|---|---|---|---|---|",
             "| 0 (uncut) | " + " | ".join(str(base[f"{p:g}"]) for p in P) + " | | | | | | |"]
    for r in rows:
        lines.append(f"| {r['level']:.2f} / {r['share_mean']:.3f} | "
                     + " | ".join(str(r["both_cut"][f"{p:g}"]) for p in P) + " | "
                     + " | ".join(f"{r['gap_both'][f'{p:g}']:+.4f}" for p in P) + " | "
                     + " | ".join(f"{r['gap_one'][f'{p:g}']:+.4f}" for p in P) + " |")
    lines += ["", f"Largest share whose both-cut quantiles at p = 1e-2 and 1e-3 stay within ±{MARGIN} of the uncut "
              f"ones, below the first that does not: {chosen:.2f}.", "",
              f"Shares of LFW photos (of {args.lfw_photos} drawn), whole and cut to MTCNN's box widened by a margin "
              "(share of the box side, each side), then detected again:", "",
              "| photo | faces | median | 10th–90th percentile |", "|---|---|---|---|"]
    lines += [f"| {k} | {v['faces']} | {v['median']} | {v['p10']}–{v['p90']} |" for k, v in lfw.items()]
    write_result(args.out, result, lines + [""])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
