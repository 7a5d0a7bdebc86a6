"""Dev pairs that may be mislabelled: list the suspects, draw them, and score dev with and without the ones judged wrong.

CelebA's identity labels carry some noise, and the pack's dev pairs inherit it: a same-person pair whose photos
show two people, or a different-person pair of one person, caps what any model can reach on dev. This script
ranks the dev pairs by two independent models, the pack's stored dlib descriptors (the teacher) and the weights
under review (the shipped ones by default, embedding the pack's crops with flip, as ``facegnet.Embedder`` does):

- same-person pairs with the lowest similarity under either model,
- different-person pairs with the highest similarity under either model,

and the dev crops least like the other photos of their own identity (a photo of someone else, or of no face, under
an identity label spoils every same-person pair it is in). It draws each suspect as a row of a contact sheet (PNG,
in ``--out``, outside git): the crops, then other dev photos of each identity for reference, so a person can see
which photo (if any) shows someone else. The pairs judged wrong by looking at those sheets are listed in
``docs/dev-pairs-flagged.md`` (a table with the two crops of each pair in backticks); the script draws exactly
those pairs again (``flagged_*.png``, to check the list), and reports the dev figures of the weights and of
the teacher on all pairs and without the listed ones (accuracy at the best threshold, 10-fold accuracy, AUC,
TAR at FAR 1e-2 and 1e-3, from ``facegnet.train.evaluate.pair_scores``), into
``benchmarks/results/dev_pairs_review.{json,md}``.

    .venv/bin/python benchmarks/dev_pairs_review.py                      # sheets in /tmp/dev_review
    .venv/bin/python benchmarks/dev_pairs_review.py --weights runs/x/model.json --top 40
"""
from __future__ import annotations

import argparse
import csv
import datetime
import json
import platform
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from facegnet.train.evaluate import pair_scores  # noqa: E402

PACK = ROOT.parent / "shared" / "data" / "train"
FLAGGED = ROOT / "docs" / "dev-pairs-flagged.md"
RESULTS = ROOT / "benchmarks" / "results"
THUMB = 112
CROP_NAME = re.compile(r"`(crops/[^`]+\.webp)`")


def read_dev(pack: Path) -> tuple[list[dict], list[tuple[str, str, bool]]]:
    """The dev rows of the manifest (with their teacher row number) and the dev pairs."""
    with open(pack / "manifest.csv", newline="") as handle:
        rows = [dict(row, row=i) for i, row in enumerate(csv.DictReader(handle))]
    dev = [row for row in rows if row["split"] == "dev"]
    with open(pack / "dev_pairs.csv", newline="") as handle:
        pairs = [(r["a"], r["b"], r["same"] == "1") for r in csv.DictReader(handle)]
    return dev, pairs


def teacher_similarity(pack: Path, dev: list[dict]) -> np.ndarray:
    """Minus the Euclidean distance between the dev crops' dlib descriptors (dlib's own measure: same person
    above -0.6), so that higher means more alike, as for the model's cosines."""
    array = np.load(pack / "teacher_dlib.npy").astype(np.float64)
    rows = array[[row["row"] for row in dev]]
    squared = (rows**2).sum(1)
    return -np.sqrt(np.maximum(squared[:, None] + squared[None, :] - 2 * rows @ rows.T, 0.0))


def model_similarity(pack: Path, dev: list[dict], weights: str | None, cache: Path) -> tuple[np.ndarray, object]:
    """Cosine similarity matrix of the dev crops under the weights (flip on, as the card's reference procedure).

    The embeddings are kept in ``cache`` under the weights' fingerprint, so a rerun (after editing the list of
    flagged pairs) does not embed again.
    """
    from facegnet import Embedder
    from facegnet.card import resolve_card

    card = resolve_card(weights)
    stored = cache / f"dev_embeddings_{card.fingerprint[:16]}.npy"
    if stored.is_file():
        embeddings = np.load(stored)
    else:
        crops = np.stack([np.asarray(Image.open(pack / row["crop"]).convert("RGB")) for row in dev])
        embeddings = Embedder(card, flip=True)(crops)
        cache.mkdir(parents=True, exist_ok=True)
        np.save(stored, embeddings)
    return embeddings @ embeddings.T, card


def face_outliers(dev: list[dict], teacher: np.ndarray, model: np.ndarray, top: int) -> list[dict]:
    """The dev crops least like the other crops of their own identity, by each model's mean similarity to them:
    a photo of someone else (or of no face) under an identity shows here first."""
    identities = np.array([row["identity"] for row in dev])
    scored = []
    for i, row in enumerate(dev):
        own = np.flatnonzero(identities == row["identity"])
        own = own[own != i]
        if own.size:
            scored.append({"crop": row["crop"], "identity": row["identity"], "others": int(own.size),
                           "teacher": float(teacher[i, own].mean()), "model": float(model[i, own].mean())})
    chosen: dict[str, dict] = {}
    for key in ("teacher", "model"):
        scored.sort(key=lambda s: s[key])
        for rank, s in enumerate(scored[:top]):
            chosen.setdefault(s["crop"], dict(s, ranks={}))["ranks"][key] = rank + 1
    return sorted(chosen.values(), key=lambda s: min(s["ranks"].values()))


def suspects(pairs, index, teacher, model, top: int) -> list[dict]:
    """The ``top`` least alike same-person pairs and the ``top`` most alike different-person pairs by each model."""
    scored = []
    for k, (a, b, same) in enumerate(pairs):
        i, j = index[a], index[b]
        scored.append({"pair": k, "a": a, "b": b, "same": same, "teacher": float(teacher[i, j]),
                       "model": float(model[i, j])})
    chosen: dict[int, dict] = {}
    for same, sign in ((True, 1), (False, -1)):
        group = [s for s in scored if s["same"] == same]
        for key in ("teacher", "model"):
            group.sort(key=lambda s: sign * s[key])
            for rank, s in enumerate(group[:top]):
                entry = chosen.setdefault(s["pair"], dict(s, ranks={}))
                entry["ranks"][key] = rank + 1
    return sorted(chosen.values(), key=lambda s: (not s["same"], min(s["ranks"].values())))


def contact_sheet(entries: list[dict], dev: list[dict], pack: Path, path: Path, references: int = 3) -> Path:
    """One row per pair: crop a, crop b, a gap, then up to ``references`` other dev photos of a's and of b's identity."""
    by_identity: dict[str, list[str]] = {}
    for row in dev:
        by_identity.setdefault(row["identity"], []).append(row["crop"])
    label_h = 16
    width = THUMB * (2 + 2 * references) + 3 * 8
    sheet = Image.new("RGB", (width, len(entries) * (THUMB + label_h)), "white")
    draw = ImageDraw.Draw(sheet)
    for r, entry in enumerate(entries):
        y = r * (THUMB + label_h)
        ids = [identity_of(entry["a"]), identity_of(entry["b"])]
        kind = "same" if entry["same"] else "diff"
        refs = ids[0] if ids[0] == ids[1] else f"{ids[0]} ... {ids[1]}"
        draw.text((2, y + 1), f"#{entry['pair']} {kind} {Path(entry['a']).stem} | {Path(entry['b']).stem}  "
                              f"dlib dist {-entry['teacher']:.2f}  model {entry['model']:.2f}   other photos: {refs}",
                  fill="black")
        x = 0
        for crop in (entry["a"], entry["b"]):
            sheet.paste(Image.open(pack / crop).convert("RGB"), (x, y + label_h))
            x += THUMB
        x += 8
        shown = [ids[0]] if ids[0] == ids[1] else ids  # one identity: twice as many of its photos
        for identity in shown:
            count = references * 2 // len(shown)
            others = [c for c in by_identity.get(identity, []) if c not in (entry["a"], entry["b"])][:count]
            for crop in others:
                sheet.paste(Image.open(pack / crop).convert("RGB"), (x, y + label_h))
                x += THUMB
            x += THUMB * (count - len(others)) + 8
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return path


def face_sheet(entries: list[dict], dev: list[dict], pack: Path, path: Path, references: int = 7) -> Path:
    """One row per suspect crop: the crop, a gap, then up to ``references`` other dev photos of its identity."""
    by_identity: dict[str, list[str]] = {}
    for row in dev:
        by_identity.setdefault(row["identity"], []).append(row["crop"])
    label_h = 16
    sheet = Image.new("RGB", (THUMB * (1 + references) + 8, len(entries) * (THUMB + label_h)), "white")
    draw = ImageDraw.Draw(sheet)
    for r, entry in enumerate(entries):
        y = r * (THUMB + label_h)
        draw.text((2, y + 1), f"{Path(entry['crop']).stem}: mean to its {entry['others']} others: dlib dist "
                              f"{-entry['teacher']:.2f}, model {entry['model']:.2f}", fill="black")
        sheet.paste(Image.open(pack / entry["crop"]).convert("RGB"), (0, y + label_h))
        others = [c for c in by_identity[entry["identity"]] if c != entry["crop"]][:references]
        for k, crop in enumerate(others):
            sheet.paste(Image.open(pack / crop).convert("RGB"), (THUMB + 8 + k * THUMB, y + label_h))
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return path


def identity_of(crop: str) -> str:
    """The CelebA identity in a pack crop's name (``crops/07424_025554.webp`` → ``7424``)."""
    return str(int(Path(crop).stem.split("_")[0]))


def read_flagged(path: Path) -> list[tuple[str, str]]:
    """The pairs listed in the flagged-pairs document: table rows naming two crops in backticks."""
    if not path.is_file():
        return []
    flagged = []
    for line in path.read_text().splitlines():
        names = CROP_NAME.findall(line)
        if line.startswith("|") and len(names) == 2:
            flagged.append((names[0], names[1]))
    return flagged


def figures(sims: np.ndarray, pairs, index, keep: np.ndarray) -> dict:
    a = np.array([index[p[0]] for p in pairs])[keep]
    b = np.array([index[p[1]] for p in pairs])[keep]
    same = np.array([p[2] for p in pairs])[keep]
    return pair_scores(sims[a, b], same)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pack", type=Path, default=PACK)
    parser.add_argument("--weights", help="model card or weights to review with (default: the shipped ones)")
    parser.add_argument("--top", type=int, default=25, help="suspects per kind and model (default 25)")
    parser.add_argument("--out", type=Path, default=Path("/tmp/dev_review"), help="contact sheets (outside git)")
    parser.add_argument("--flagged", type=Path, default=FLAGGED, help="the pairs judged wrong (markdown table)")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()

    dev, pairs = read_dev(args.pack)
    index = {row["crop"]: i for i, row in enumerate(dev)}
    teacher = teacher_similarity(args.pack, dev)
    model, card = model_similarity(args.pack, dev, args.weights, args.out)
    found = suspects(pairs, index, teacher, model, args.top)
    faces = face_outliers(dev, teacher, model, args.top)
    sheets = []
    for same in (True, False):
        group = [s for s in found if s["same"] == same]
        for start in range(0, len(group), 10):
            name = f"{'same' if same else 'different'}_{start // 10:02d}.png"
            sheets.append(str(contact_sheet(group[start : start + 10], dev, args.pack, args.out / name)))
    for start in range(0, len(faces), 10):
        sheets.append(str(face_sheet(faces[start : start + 10], dev, args.pack, args.out / f"faces_{start // 10:02d}.png")))
    with open(args.out / "suspects.json", "w") as handle:
        json.dump({"pairs": found, "faces": faces}, handle, indent=1)

    flagged = set(read_flagged(args.flagged))
    listed = {(a, b): k for k, (a, b, _) in enumerate(pairs)}
    unknown = [p for p in flagged if p not in listed]
    if unknown:
        raise SystemExit(f"{args.flagged}: {len(unknown)} listed pairs are not dev pairs, e.g. {unknown[0]}")
    keep = np.array([(a, b) not in flagged for a, b, _ in pairs])
    shown = [{"pair": listed[p], "a": p[0], "b": p[1], "same": pairs[listed[p]][2],
              "teacher": float(teacher[index[p[0]], index[p[1]]]), "model": float(model[index[p[0]], index[p[1]]])}
             for p in sorted(flagged, key=listed.get)]
    for start in range(0, len(shown), 10):  # the listed pairs as they are judged: look at every one
        sheets.append(str(contact_sheet(shown[start : start + 10], dev, args.pack,
                                        args.out / f"flagged_{start // 10:02d}.png")))
    results = {}
    for name, sims in (("model", model), ("teacher_dlib", teacher)):
        results[name] = {"all_pairs": figures(sims, pairs, index, np.ones(len(pairs), bool)),
                         "without_flagged": figures(sims, pairs, index, keep)}
    cpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    cpu = next((line.split(":", 1)[1].strip() for line in cpu.splitlines() if line.startswith("Model name")),
               platform.processor())
    record = {
        "command": "python " + " ".join([Path(sys.argv[0]).as_posix().split(str(ROOT) + "/")[-1], *sys.argv[1:]]),
        "date": datetime.date.today().isoformat(),
        "cpu": cpu,
        "weights": card.name,
        "fingerprint": getattr(card, "sha256", None),
        "dev_pairs": len(pairs),
        "suspects": len(found),
        "suspect_crops": len(faces),
        "flagged": len(flagged),
        "flagged_same": int(sum(not k and p[2] for k, p in zip(keep, pairs))),
        "flagged_different": int(sum(not k and not p[2] for k, p in zip(keep, pairs))),
        "contact_sheets": sheets,
        "figures": results,
    }
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "dev_pairs_review.json").write_text(json.dumps(record, indent=2) + "\n")
    (args.results / "dev_pairs_review.md").write_text(markdown(record))
    print(markdown(record))
    return 0


def markdown(record: dict) -> str:
    lines = [
        f"# Dev pairs with and without the {record['flagged']} judged mislabelled",
        "",
        f"`{record['command']}` on {record['date']}, {record['cpu']}; weights {record['weights']}.",
        "",
        "| scorer | pairs | accuracy | 10-fold | AUC | TAR @ FAR 1e-2 | TAR @ FAR 1e-3 |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, sets in record["figures"].items():
        for label, key in (("all", "all_pairs"), ("without flagged", "without_flagged")):
            f = sets[key]
            count = record["dev_pairs"] - (record["flagged"] if key == "without_flagged" else 0)
            lines.append(f"| {name} | {label} ({count}) | {100 * f['accuracy']:.2f}% | "
                         f"{100 * f['accuracy_10fold']:.2f}% | {f['auc']:.4f} | {100 * f['tar@far1e-2']:.2f}% | "
                         f"{100 * f['tar@far1e-3']:.2f}% |")
    lines += ["", f"{record['flagged']} pairs listed in docs/dev-pairs-flagged.md ({record['flagged_same']} same-person, "
              f"{record['flagged_different']} different-person), judged from {record['suspects']} suspect pairs and "
              f"{record['suspect_crops']} suspect crops drawn.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
