#!/usr/bin/env python3
"""The impostor-score tail behind the per-search threshold: dev pairs of the training pack and, with
``--strangers``, every pair of many stranger photos (never LFW photos or LFW people).

For each embedding procedure ("flip:fp32", "noflip:fp32", "flip:int8", "noflip:int8") this scores impostor pairs
and describes the upper tail of those scores compactly: empirical quantiles down to an exceedance probability
``p_u``, and beyond ``p_u`` a fitted tail. Galleries read it to place their threshold where a *search* of
a stranger against all N enrolled templates names somebody with the chosen probability
(:mod:`facegnet.gallery.search_threshold`); at N = 1,678 and 1% per search that is a per-comparison rate of
6e-6, far below what the dev pairs reach (1e-3 with 540 pairs above).

Two impostor populations:

- the dev split of the training pack: every pair of faces of different people among its 1,053 faces of 53
  people (540,986 pairs; quantiles stored down to 1e-3);
- ``--strangers DIR`` (repeatable): photos of people unrelated to each other, one face each, detected, chosen
  (the face nearest the centre, as a search's probe) and aligned as a gallery search does, every pair scored
  (``DIR[a:b]``: a slice of the folder's photos in sorted path order). Different photos are taken to be
  different people; the top-scoring pairs are listed in the results so a reader can judge.

A stranger face counts only when at most ``--max-outside`` (5%) of its aligned 112×112 crop lies outside its
photo. A search's photo holds the face with its surroundings; a photo cut close to the face leaves the warp's
black fill in every crop, and that shared fill raises all such pairs' scores together (the dev faces, blacked
out where FairFace's framing would cut them, score higher as impostors too). Those faces are scored and
reported ("every face as cut"), never used.

``--stranger-fill reflect`` aligns each stranger face from its photo padded by reflection (``BORDER_REFLECT_101``,
wide enough that the crop never reaches the warp's black fill; the product's alignment is unchanged), so the part
outside the photo is mirrored texture of that photo rather than one constant. Such faces count however far they
reach beyond the photo only if the fill passes a dev check fixed before it was first run: the dev crops, each
cut with a random stranger face's outside mask and the cut part filled by reflection (the crop mapped back into
that photo's frame, padded and realigned), must keep their impostor quantiles within ±``FILL_MARGIN`` (0.02) of
the uncut crops' at p = 1e-2, 1e-3 and 1e-4. Faces repeating an earlier one (a pair above ``DUPLICATE_ABOVE``,
0.98: the same photo twice) are dropped; the same person in two photos stays, which only raises the tail.

When the counted strangers hold at least 100 pairs above an exceedance probability below 1e-3, the card's tail
is the more conservative of the two populations at each stored probability (the dev pairs only where at least
50 of them lie above it), made monotone, down to the smallest probability with 100 stranger pairs above it
(``p_u``), fitted beyond it to the strangers' scores. Otherwise, as for the shipped card, the dev pairs alone
give it: quantiles down to ``p_u`` = 1e-3 and the fitted tail beyond. The fitted tail is exponential (scale: the
mean excess) when the generalised Pareto fit's shape is negative, as on the dev pairs (a bounded tail is an
inference no gallery's strangers need respect, so the exponential, its conservative limit, is stored and the fit
recorded beside it), and that GPD when the shape is positive (heavier than any exponential). Deeper empirical
quantiles are written beside the tail's predictions.

    python benchmarks/calibrate_search_threshold.py [--weights CARD] [--write-card]
    python benchmarks/calibrate_search_threshold.py --strangers ../data/fairface/fair_face/val \\
        --strangers '../data/fairface/fair_face/train[30000:]' --detection-cache ../data/fairface/detections.sqlite \\
        --embeddings-cache ../data/fairface/embeddings --procedures flip:fp32 --stranger-fill reflect \\
        --out benchmarks/results/search_threshold_strangers

The second command measured FairFace (CC BY 4.0; ``facegnet.train.sources``' pinned snapshot, ``git archive
<commit> fair_face``): ``val/`` and the last 10,000 of ``train/`` in sorted order, photos the shipped weights'
lineage never trained on (its one run with unlabelled faces, ``ea246eee…``, had the first 7,704 FairFace crops in
that order, all from ``train/``). That snapshot's 224×224 photos are cut close: a median 44% of each aligned crop
lies outside the photo and 36 of 14,655 faces pass the 5% rule, too few to reach below the dev pairs, so the
card keeps the dev tail (``benchmarks/results/search_threshold_strangers.md``). Reflection fill fails its dev
check there (dev impostor quantiles +0.053, +0.064, +0.073 above the uncut crops' at 1e-2, 1e-3, 1e-4; black
fill +0.048, +0.071, +0.089), so it qualifies no more faces. Its highest-scoring pairs are the
same photo twice (1.0) and the same person in two photos (0.95–0.97): different photos are not always different
people there.

``--write-card`` sets ``impostor_tail`` in each procedure's entry of the card's ``thresholds`` (and at the top
level for flip:fp32); no other number is changed. Results: ``benchmarks/results/search_threshold.{json,md}``
(``--out`` another name). Run it after every release (``docs/training.md``): ``facegnet.train.release`` writes
the card's thresholds but not its tail, and without a tail a gallery falls back to the card's fixed
identification threshold.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import platform
import re
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

#: Exceedance probabilities of the stored empirical quantiles (as deep as each population allows).
GRID = (0.1, 0.03, 0.01, 0.003, 0.001, 3e-4, 1e-4, 3e-5, 1e-5, 3e-6, 1e-6, 3e-7, 1e-7, 3e-8, 1e-8)
#: Pairs that must lie above a stored quantile: strangers (also where the fitted tail takes over) and dev.
MIN_ABOVE, MIN_ABOVE_DEV = 100, 50
#: Without strangers: the dev quantiles down to P_U, where the fitted tail takes over.
P_U = 1e-3
#: Gallery sizes (templates) whose per-search thresholds the report lists.
SIZES = (1, 10, 100, 1000, 1678, 10000, 100000)
#: Stranger scores below this are counted, not kept (far below any quantile stored).
FLOOR = 0.0
TOP_PAIRS = 12
#: Gallery size of the simulated searches among the strangers (LFW's one-photo-each gallery has 1,678 people).
SEARCH_TEMPLATES = 1678
#: A stranger face counts only when at most this share of its aligned crop lies outside its photo: a search's
#: photo holds the face with its surroundings, and the black fill of a photo cut close to the face is shared by
#: every such crop, which raises all their scores together (see the module docstring).
MAX_OUTSIDE = 0.05
#: Two stranger faces scoring above this are one photo twice (or near enough): the later one is dropped.
DUPLICATE_ABOVE = 0.98


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


def stranger_photos(spec: str) -> list[Path]:
    """The photos of ``DIR``, or of ``DIR[a:b]``: a slice of the folder's photos in sorted path order."""
    from facegnet.io import IMAGE_SUFFIXES

    m = re.fullmatch(r"(.*)\[(-?\d*):(-?\d*)\]", spec)
    folder, a, b = (m.group(1), m.group(2), m.group(3)) if m else (spec, "", "")
    if not Path(folder).is_dir():
        raise SystemExit(f"{folder}: no such folder (--strangers)")
    photos = sorted(p for p in Path(folder).rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    return photos[slice(int(a) if a else None, int(b) if b else None)]


def reflection_margin(shape: tuple[int, ...], landmarks: np.ndarray, size: int) -> int:
    """How far (pixels) the aligned crop of this face reaches beyond its photo's edges."""
    import cv2

    from facegnet.align import CROP_SIZE, TEMPLATE, similarity_transform

    inverse = cv2.invertAffineTransform(similarity_transform(landmarks, TEMPLATE * (size / CROP_SIZE)))
    corners = np.array([[0, 0], [size, 0], [0, size], [size, size]], np.float64) @ inverse[:, :2].T + inverse[:, 2]
    height, width = shape[:2]
    beyond = max(0.0, -corners.min(), float((corners[:, 0] - width).max()), float((corners[:, 1] - height).max()))
    return math.ceil(beyond) + 2


def align_reflected(image: np.ndarray, landmarks: np.ndarray, size: int) -> np.ndarray:
    """The face aligned as :func:`facegnet.align.align_face` aligns it, from its photo padded by reflection
    (``BORDER_REFLECT_101``) wide enough that the crop never reaches the warp's black fill: the part outside the
    photo is then mirrored texture of that photo, different in every photo, not one constant shared by all."""
    import cv2

    from facegnet.align import align_face

    pad = reflection_margin(image.shape, landmarks, size)
    padded = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_REFLECT_101)
    return align_face(padded, np.asarray(landmarks, np.float64) + pad, size)


def cut_like_strangers(crops: np.ndarray, landmarks: np.ndarray, shapes: np.ndarray, fill: str,
                       seed: int = 0) -> np.ndarray:
    """Dev crops cut the way the strangers' photos cut their faces: each crop takes the outside mask of a random
    stranger face (that face's photo edges mapped into its aligned crop) and the cut part is filled ``"black"``
    (the warp's fill) or by ``"reflect"``: the crop is mapped back into that stranger's photo frame, the photo is
    padded by reflection and the face realigned (:func:`align_reflected`), and its pixels fill the cut part."""
    import cv2

    from facegnet.align import CROP_SIZE, TEMPLATE, similarity_transform

    size = crops.shape[1]
    pick = np.random.default_rng(seed).choice(len(landmarks), len(crops))
    out = np.empty_like(crops)
    for i, (crop, k) in enumerate(zip(crops, pick)):
        height, width = int(shapes[k][0]), int(shapes[k][1])
        matrix = similarity_transform(landmarks[k], TEMPLATE * (size / CROP_SIZE))
        inside = cv2.warpAffine(np.ones((height, width), np.uint8), matrix, (size, size),
                                flags=cv2.INTER_NEAREST)[..., None]
        if fill == "black":
            out[i] = crop * inside
            continue
        photo = cv2.warpAffine(crop, cv2.invertAffineTransform(matrix), (width, height), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_REFLECT_101)
        out[i] = np.where(inside > 0, crop, align_reflected(photo, landmarks[k], size))
    return out


#: The dev check a stranger fill must pass before its strangers count (fixed before it was first run): the dev
#: impostor quantiles of dev crops cut like the strangers and filled this way lie within FILL_MARGIN of the uncut
#: crops' at each of FILL_CHECK_P (both ways: a fill that lowers scores would make the strangers' tail too low).
FILL_MARGIN, FILL_CHECK_P = 0.02, (1e-2, 1e-3, 1e-4)


def fill_check(crops: np.ndarray, ids: np.ndarray, dev: Impostors, landmarks: np.ndarray, shapes: np.ndarray,
               embed, fill: str) -> dict:
    """Dev impostor quantiles uncut, cut like the strangers with black fill, and cut with ``fill``; whether
    ``fill`` keeps them within FILL_MARGIN of the uncut ones (:data:`FILL_CHECK_P`)."""
    fills = ["black"] + ([fill] if fill != "black" else [])
    tables = {"uncut": population_table(dev)}
    for f in fills:
        tables[f] = population_table(impostor_scores(embed(cut_like_strangers(crops, landmarks, shapes, f)), ids))
    gaps = {f"{p:g}": round(tables[fill][f"{p:g}"] - tables["uncut"][f"{p:g}"], 4) for p in FILL_CHECK_P}
    return {"fill": fill, "quantiles": tables, "gaps": gaps, "margin": FILL_MARGIN,
            "passes": fill != "black" and all(abs(g) <= FILL_MARGIN for g in gaps.values())}


def stranger_crops(photos: list[Path], card, detection_cache: Path | None, fill: str = "black",
                   chunk: int = 256) -> tuple[np.ndarray, list[Path], np.ndarray, dict, np.ndarray, np.ndarray]:
    """Aligned crops of the face nearest each photo's centre, found and aligned as a search's probe is
    (:meth:`FaceRecognizer.embed_images` with ``select="center"``; ``fill="reflect"``: from the photo padded by
    reflection, :func:`align_reflected`), the share of each crop that lies outside its photo, and each face's
    landmarks and photo size; MTCNN's detections are kept in ``detection_cache`` so a rerun only decodes and
    aligns."""
    from facegnet.align import align_face, outside_share
    from facegnet.detection.cache import DetectionCache
    from facegnet.io import load_image
    from facegnet.recognizer import FaceRecognizer

    rec = FaceRecognizer(card.path)
    cache = DetectionCache(detection_cache, rec.detector) if detection_cache else None
    crops, used, outside, skipped = [], [], [], {"no face": 0, "face too small": 0}
    landmarks, shapes = [], []
    for start in range(0, len(photos), chunk):
        batch = photos[start : start + chunk]
        arrays = [load_image(p) for p in batch]
        keys = [cache.key(p) for p in batch] if cache else [str(p) for p in batch]
        found = cache.get_many(keys) if cache else {}
        todo = [i for i, k in enumerate(keys) if k not in found]
        fresh = rec.detect_batch([arrays[i] for i in todo]) if todo else []
        if cache:
            cache.put_many((keys[i], faces) for i, faces in zip(todo, fresh))
        found.update({keys[i]: faces for i, faces in zip(todo, fresh)})
        for photo, array, key in zip(batch, arrays, keys):
            faces = found[key]
            if not faces:
                skipped["no face"] += 1
                continue
            centre = np.array([array.shape[1] / 2, array.shape[0] / 2])
            face = min(faces, key=lambda f: float(np.linalg.norm((f.box[:2] + f.box[2:]) / 2 - centre)))
            if face.size < rec.min_face_size:
                skipped["face too small"] += 1
                continue
            align = align_reflected if fill == "reflect" else align_face
            crops.append(align(array, face.landmarks, rec.card.input_size))
            outside.append(outside_share(array.shape, face.landmarks, rec.card.input_size))
            landmarks.append(np.asarray(face.landmarks, np.float64).reshape(5, 2))
            shapes.append(array.shape[:2])
            used.append(photo)
        print(f"strangers: {start + len(batch)}/{len(photos)} photos, {len(crops)} faces", file=sys.stderr,
              flush=True)
    if cache:
        cache.close()
    return (np.stack(crops), used, np.array(outside, np.float32), skipped, np.array(landmarks),
            np.array(shapes, np.int64))


class StrangerEmbeddings:
    """The strangers' embeddings per procedure: crops made once (:func:`stranger_crops`), embeddings kept in
    ``cache`` (keyed by the weights, the fill, the procedure and the photo list) so a rerun neither detects nor
    embeds."""

    def __init__(self, photos: list[Path], card, detection_cache: Path | None, cache: Path | None,
                 fill: str = "black") -> None:
        self.photos, self.card, self.detection_cache, self.cache = photos, card, detection_cache, cache
        self.fill = fill
        self.landmarks, self.shapes = np.zeros((0, 5, 2)), np.zeros((0, 2), np.int64)
        self.crops: np.ndarray | None = None
        self.used: list[Path] = []
        self.outside = np.zeros(0, np.float32)
        self.skipped: dict[str, int] = {}
        self.faces = 0

    def _file(self, key: str) -> Path | None:
        if self.cache is None:
            return None
        digest = hashlib.sha1("\n".join([self.card.fingerprint, *map(str, self.photos)]).encode()).hexdigest()[:12]
        fill = "" if self.fill == "black" else f"{self.fill}-"
        return self.cache / f"strangers-{fill}{key.replace(':', '-')}-{digest}.npz"

    def __call__(self, key: str, embed) -> tuple[np.ndarray, list[Path], np.ndarray]:
        """Embeddings of every stranger face, their photos, and the share of each crop outside its photo."""
        file = self._file(key)
        if file is not None and file.exists():
            saved = np.load(file, allow_pickle=False)
            self.used = [Path(p) for p in saved["used"]]
            self.outside, self.skipped = saved["outside"], json.loads(str(saved["skipped"]))
            self.faces = len(self.used)
            if "landmarks" in saved:
                self.landmarks, self.shapes = saved["landmarks"], saved["shapes"]
            return saved["emb"], self.used, self.outside
        if self.crops is None:
            self.crops, self.used, self.outside, self.skipped, self.landmarks, self.shapes = stranger_crops(
                self.photos, self.card, self.detection_cache, self.fill)
            self.faces = len(self.used)
        emb = embed(self.crops)
        if file is not None:
            file.parent.mkdir(parents=True, exist_ok=True)
            np.savez(file, emb=emb, used=np.array([str(p) for p in self.used]), outside=self.outside,
                     skipped=json.dumps(self.skipped), landmarks=self.landmarks, shapes=self.shapes)
        return emb, self.used, self.outside


def duplicates(embeddings: np.ndarray, above: float, block: int = 1024) -> np.ndarray:
    """Faces that repeat an earlier face (a pair scoring above ``above``: the same photo twice, near enough):
    True for the later face of each such pair. The same person in different photos scores lower and stays."""
    repeat = np.zeros(len(embeddings), bool)
    for s in range(0, len(embeddings), block):
        sims = embeddings[s : s + block] @ embeddings.T
        rows, cols = np.nonzero(sims > above)
        later = cols > s + rows
        repeat[cols[later]] = True
    return repeat


def all_pair_scores(embeddings: np.ndarray, photos: list[Path], block: int = 1024) -> tuple[Impostors, list[dict]]:
    """Every pair's cosine similarity, in blocks of rows: the scores at or above FLOOR kept (highest first), the
    others only counted, and the TOP_PAIRS highest pairs with their photos."""
    n = len(embeddings)
    kept, best = [], []
    for s in range(0, n, block):
        sims = embeddings[s : s + block] @ embeddings[s:].T
        sims[np.tril_indices(len(sims), 0, sims.shape[1])] = -2.0  # each pair once, never a face with itself
        kept.append(sims[sims >= FLOOR])
        k = min(TOP_PAIRS, sims.size)
        flat = np.argpartition(sims, -k, axis=None)[-k:]
        best += [(float(sims.flat[i]), s + int(i) // sims.shape[1], s + int(i) % sims.shape[1]) for i in flat]
    top = np.sort(np.concatenate(kept))[::-1]
    named = [{"score": round(v, 4), "a": str(photos[i]), "b": str(photos[j])}
             for v, i, j in sorted(best, reverse=True)[:TOP_PAIRS]]
    return Impostors(top, n * (n - 1) // 2, n), named


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


def reaches_beyond_dev(strangers: Impostors) -> bool:
    """Whether the strangers hold quantiles deeper than the dev pairs' (MIN_ABOVE pairs above one below P_U)."""
    return any(p < P_U and strangers.above(p) >= MIN_ABOVE for p in GRID)


def describe_tail(dev: Impostors, strangers: Impostors | None, command: str, calibrated_on: str) -> dict:
    """The compact description stored in the card (see the module docstring)."""
    if strangers is None:
        quantiles = [[p, round(dev.score_at(p), 5)] for p in GRID if p >= P_U]
        tail = fitted_tail(dev, P_U)
        pairs = dev.pairs
    else:
        points = [p for p in GRID if strangers.above(p) >= MIN_ABOVE]
        quantiles, running = [], -1.0
        for p in points:  # the more conservative population at each p, never below a shallower quantile
            q = strangers.score_at(p)
            if dev.above(p) >= MIN_ABOVE_DEV:
                q = max(q, dev.score_at(p))
            running = max(running, q)
            quantiles.append([p, round(running, 5)])
        p_u = points[-1]
        tail = fitted_tail(strangers, p_u)
        tail["u"] = quantiles[-1][1]  # the envelope's quantile (the strangers' own is never above it)
        pairs = dev.pairs + strangers.pairs
    return {"pairs": int(pairs), "quantiles": quantiles, "tail": tail, "calibrated_on": calibrated_on,
            "command": command}


def check(desc: dict, imp: Impostors) -> list[dict]:
    """Deeper empirical quantiles (at least 5 pairs above) against the stored tail and the fitted GPD."""
    from facegnet.gallery.search_threshold import threshold_at

    gpd = {**desc, "tail": {**desc["tail"], **desc["tail"]["gpd_fitted"]}}
    p_u = desc["tail"]["p_u"]
    return [{"p": p, "pairs_above": imp.above(p), "empirical": round(imp.score_at(p), 4),
             "stored": round(threshold_at(desc, p), 4), "gpd": round(threshold_at(gpd, p), 4)}
            for p in GRID if p < p_u and imp.above(p) >= 5 and imp.score_at(p) is not None]


def population_table(imp: Impostors | None) -> dict[str, float]:
    """The population's own empirical quantiles, where at least 5 pairs lie above."""
    if imp is None:
        return {}
    return {f"{p:g}": round(imp.score_at(p), 4) for p in GRID if imp.above(p) >= 5 and imp.score_at(p) is not None}


def simulated_searches(embeddings: np.ndarray, tail: dict, far: float, templates: int = SEARCH_TEMPLATES,
                       splits: int = 5, seed: int = 0) -> dict | None:
    """Open-set searches among the strangers themselves: ``templates`` of them enrolled at random, every other
    one searched, at the threshold the tail gives for ``far`` per search; the share named, per split."""
    from facegnet.gallery.search_threshold import search_threshold

    if len(embeddings) < 2 * templates:
        return None
    threshold = search_threshold(tail, templates, far).threshold
    rng = np.random.default_rng(seed)
    named = []
    for _ in range(splits):
        order = rng.permutation(len(embeddings))
        enrolled, probes = embeddings[order[:templates]], embeddings[order[templates:]]
        best = np.concatenate([(probes[s : s + 4096] @ enrolled.T).max(axis=1) for s in range(0, len(probes), 4096)])
        named.append(float((best >= threshold).mean()))
    return {"templates": templates, "threshold": round(threshold, 4), "far_per_search": far,
            "searches_per_split": len(embeddings) - templates, "named": [round(x, 4) for x in named],
            "named_mean": round(float(np.mean(named)), 4)}


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        return platform.processor() or platform.machine()


def command_of(args: argparse.Namespace) -> str:
    parts = ["python benchmarks/calibrate_search_threshold.py"]
    if args.data != DEFAULT_PACK:
        parts.append(f"--data {args.data}")
    if args.weights:
        parts.append(f"--weights {args.weights}")
    parts += [f"--strangers '{s}'" if "[" in s else f"--strangers {s}" for s in args.strangers]
    if args.detection_cache:
        parts.append(f"--detection-cache {args.detection_cache}")
    if args.embeddings_cache:
        parts.append(f"--embeddings-cache {args.embeddings_cache}")
    if args.stranger_fill != "black":
        parts.append(f"--stranger-fill {args.stranger_fill}")
    if args.max_outside != MAX_OUTSIDE:
        parts.append(f"--max-outside {args.max_outside:g}")
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
    parser.add_argument("--strangers", action="append", default=[], metavar="DIR[a:b]",
                        help="a folder of stranger photos, one person each, never LFW (repeatable)")
    parser.add_argument("--detection-cache", type=Path, default=None, metavar="FILE",
                        help="keep the strangers' MTCNN detections in this SQLite file")
    parser.add_argument("--embeddings-cache", type=Path, default=None, metavar="DIR",
                        help="keep the strangers' embeddings here, per procedure, and reuse them")
    parser.add_argument("--max-outside", type=float, default=MAX_OUTSIDE, metavar="SHARE",
                        help="skip stranger faces whose aligned crop lies more than this share outside the photo")
    parser.add_argument("--stranger-fill", choices=("black", "reflect"), default="black",
                        help="align strangers from the photo as is (black beyond its edges) or padded by reflection; "
                             "a reflection-filled face counts however far its crop reaches beyond the photo only if "
                             "the fill passes the dev check (FILL_MARGIN)")
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
    photos = [p for spec in args.strangers for p in stranger_photos(spec)]
    wanted = args.procedures.split(",")
    fill = args.stranger_fill
    strangers_of = StrangerEmbeddings(photos, card, args.detection_cache, args.embeddings_cache, fill)
    black_of = StrangerEmbeddings(photos, card, args.detection_cache, args.embeddings_cache) \
        if fill != "black" else strangers_of
    repeats = 0
    results = {}
    for flip, numerics in PROCEDURES:
        key = f"{'flip' if flip else 'noflip'}:{numerics}"
        if key not in wanted:
            continue
        embed = embedder_for(card, flip, numerics)
        dev = impostor_scores(embed(crops), ids)
        strangers, best, as_cut, best_cut, framed = None, [], None, [], np.zeros(0, bool)
        filled, best_filled, checked = None, [], None
        if photos:
            s_emb, s_all, outside = strangers_of(key, embed)
            framed = outside <= args.max_outside
            if fill != "black":  # every face filled by `fill`: counted only when the dev check passes
                checked = fill_check(crops, ids, dev, strangers_of.landmarks, strangers_of.shapes, embed, fill)
                repeat = duplicates(s_emb, DUPLICATE_ABOVE)
                repeats = int(repeat.sum())
                filled, best_filled = all_pair_scores(s_emb[~repeat], [p for p, r in zip(s_all, repeat) if not r])
                framed = ~repeat if checked["passes"] else framed & ~repeat
                b_emb, b_all, _ = black_of(key, embed)
            else:
                b_emb, b_all = s_emb, s_all
            if not (outside <= args.max_outside).all():  # every face as the photos cut it: reported, never used
                as_cut, best_cut = all_pair_scores(b_emb, b_all)
            if framed.sum() >= 2:
                strangers, best = all_pair_scores(s_emb[framed], [p for p, ok in zip(s_all, framed) if ok])
        deeper = strangers is not None and reaches_beyond_dev(strangers)
        how = (f", aligned from photos padded by {fill} ({repeats} repeated photos dropped)"
               if checked and checked["passes"] else "")
        calibrated_on = (f"every pair of different people among the training pack's {len(crops)} dev faces"
                         + (f", and every pair of {int(framed.sum())} stranger faces ({', '.join(args.strangers)})"
                            f"{how}; at each quantile the more conservative population" if deeper else "")
                         + "; never LFW")
        desc = describe_tail(dev, strangers if deeper else None, command, calibrated_on)
        dev_only = describe_tail(dev, None, command, calibrated_on)
        sizes = {str(n): round(search_threshold(desc, n, args.far).threshold, 4) for n in SIZES}
        sizes_dev = {str(n): round(search_threshold(dev_only, n, args.far).threshold, 4) for n in SIZES}
        results[key] = {
            "impostor_tail": desc,
            "check": check(desc, strangers if strangers is not None else dev),
            "threshold_by_templates": sizes,
            "threshold_by_templates_dev_only": sizes_dev,
            "dev_quantiles": population_table(dev),
            "stranger_quantiles": population_table(strangers),
            "stranger_as_cut_quantiles": population_table(as_cut),
            "stranger_filled_quantiles": population_table(filled),
            "fill_check": checked,
            "strangers_used": deeper,
            "searches_among_strangers": simulated_searches(s_emb[framed], desc, args.far) if photos else None,
            "searches_among_strangers_as_cut": simulated_searches(b_emb, desc, args.far) if photos else None,
            "highest_dev_impostor": round(float(dev.top[0]), 4),
            "highest_stranger_pairs": best,
            "highest_stranger_pairs_as_cut": best_cut,
            "highest_stranger_pairs_filled": best_filled,
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
        "stranger_photos": len(photos),
        "stranger_faces": strangers_of.faces,
        "stranger_skipped": strangers_of.skipped,
        "max_outside": args.max_outside,
        "stranger_fill": fill,
        "stranger_repeats_dropped": repeats,
        "stranger_outside_quantiles": {f"{q:g}": round(float(np.quantile(strangers_of.outside, q)), 3)
                                       for q in (0.1, 0.25, 0.5, 0.75, 0.9)} if strangers_of.faces else {},
        "stranger_faces_framed": int(framed.sum()),
        "stranger_pairs": int(strangers.pairs) if strangers is not None else 0,
        "stranger_pairs_as_cut": int(as_cut.pairs) if as_cut is not None else 0,
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
    where = f"{r['dev_faces']} dev faces of the training pack ({r['dev_pairs']:,} impostor pairs)"
    if r["stranger_photos"]:
        skipped = ", ".join(f"{v} {k}" for k, v in r["stranger_skipped"].items())
        outside = r["stranger_outside_quantiles"]
        passed = any((p.get("fill_check") or {}).get("passes") for p in r["procedures"].values())
        counted = (f"every face ({r['stranger_fill']} fill, {r['stranger_repeats_dropped']} repeats dropped)"
                   if passed else f"with at most {r['max_outside']:g} outside")
        where += (f" and {r['stranger_faces']:,} stranger faces of {r['stranger_photos']:,} photos ({skipped}); "
                  f"share of each aligned crop outside its photo: median {outside.get('0.5')}, 10th–90th "
                  f"percentile {outside.get('0.1')}–{outside.get('0.9')}; {r['stranger_faces_framed']:,} faces "
                  f"counted, {counted} ({r['stranger_pairs']:,} pairs)")
    used = [k for k, p in r["procedures"].items() if p["strangers_used"]]
    lines = [
        f"# Impostor-score tails and per-search thresholds ({r['weights']}, sha256 {r['sha256'][:12]}…)",
        "",
        f"`{r['command']}`: {where}; never LFW; {r['cpu']}, {r['date']}, {r['seconds']} s.",
        "",
        "The card's tail comes from "
        + (f"the dev pairs and the strangers, the more conservative at each quantile ({', '.join(used)})"
           if used else "the dev pairs alone (no stranger population reaching deeper than them)") + ".",
        "",
        f"Threshold at which a stranger's search against N enrolled templates (photos) names somebody with probability "
        f"{r['far_per_search']:g} (per-comparison rate about {r['far_per_search']:g} / N), from the card's tail"
        + (" and from the dev pairs alone (exponential beyond 1e-3):" if used else ":"),
        "",
        "| procedure | tail | " + " | ".join(f"N = {n}" for n in SIZES) + " |",
        "|---|---|" + "---|" * len(SIZES),
    ]
    for key, p in r["procedures"].items():
        lines.append(f"| {key} | card | " + " | ".join(str(p["threshold_by_templates"][str(n)]) for n in SIZES) + " |")
        if p["strangers_used"]:
            lines.append(f"| {key} | dev only | " + " | ".join(str(p["threshold_by_templates_dev_only"][str(n)])
                                                           for n in SIZES) + " |")
    checks = [(key, p["fill_check"]) for key, p in r["procedures"].items() if p.get("fill_check")]
    for key, c in checks:
        probs = list(c["quantiles"]["uncut"])
        lines += ["", f"Dev check of the {c['fill']} fill ({key}): the dev crops cut as the strangers' photos cut "
                  f"their faces (each takes a random stranger face's outside mask), the cut part filled black or by "
                  f"{c['fill']}; the fill passes when its dev impostor quantiles lie within ±{c['margin']} of the "
                  f"uncut crops' at p = {', '.join(c['gaps'])}: gaps {', '.join(f'{g:+}' for g in c['gaps'].values())}"
                  f", {'passes' if c['passes'] else 'fails'}.", "",
                  "| dev crops | " + " | ".join(f"p = {q}" for q in probs) + " |", "|---|" + "---|" * len(probs)]
        lines += [f"| {name} | " + " | ".join(str(t.get(q, "")) for q in probs) + " |"
                  for name, t in c["quantiles"].items()]
    tables = ("dev_quantiles", "stranger_quantiles", "stranger_filled_quantiles", "stranger_as_cut_quantiles")
    probs = sorted({q for p in r["procedures"].values() for t in tables for q in p.get(t, {})}, key=lambda q: -float(q))
    lines += ["", "Empirical quantiles of each population (score exceeded by a fraction p of its pairs; at least 5 "
              "pairs above):", "",
              "| procedure | population | " + " | ".join(f"p = {q}" for q in probs) + " |",
              "|---|---|" + "---|" * len(probs)]
    names = {"dev_quantiles": "dev pairs", "stranger_quantiles": f"strangers, at most {r['max_outside']:g} outside",
             "stranger_as_cut_quantiles": "strangers, every face as cut (not used)",
             "stranger_filled_quantiles": f"strangers, every face, {r.get('stranger_fill')} fill, "
                                          f"{r.get('stranger_repeats_dropped')} repeats dropped"
                                          + ("" if used else " (not used)")}
    for key, p in r["procedures"].items():
        for t in tables:
            if p.get(t):
                lines.append(f"| {key} | {names[t]} | " + " | ".join(str(p[t].get(q, "")) for q in probs) + " |")
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
    searches = [(key, t, p[f]) for key, p in r["procedures"].items()
                for f, t in (("searches_among_strangers", f"at most {r['max_outside']:g} outside"),
                             ("searches_among_strangers_as_cut", "every face as cut")) if p.get(f)]
    if searches:
        lines += ["", "Searches among the strangers themselves: N of them enrolled at random, every other one searched, "
                  "at the card's threshold for the per-search rate (5 random splits):", "",
                  "| procedure | strangers | N | threshold | per-search rate asked | searches per split | named |",
                  "|---|---|---|---|---|---|---|"]
        lines += [f"| {key} | {t} | {q['templates']} | {q['threshold']} | {100 * q['far_per_search']:g}% | "
                  f"{q['searches_per_split']:,} | {100 * q['named_mean']:.2f}% "
                  f"({', '.join(f'{100 * x:.2f}' for x in q['named'])}) |" for key, t, q in searches]
    for field, title in (("highest_stranger_pairs", f"strangers with at most {r['max_outside']:g} outside"),
                         ("highest_stranger_pairs_filled", f"strangers, every face, {r.get('stranger_fill')} fill"),
                         ("highest_stranger_pairs_as_cut", "strangers, every face as cut")):
        tops = [(key, p[field]) for key, p in r["procedures"].items() if p.get(field)]
        if tops:
            key, pairs = tops[0]
            lines += ["", f"Highest-scoring pairs, {title} ({key}; highest dev impostor "
                      f"{r['procedures'][key]['highest_dev_impostor']}), to judge whether any is one person twice:",
                      "", "| score | photo a | photo b |", "|---|---|---|"]
            lines += [f"| {q['score']} | {Path(q['a']).parent.name}/{Path(q['a']).name} | "
                      f"{Path(q['b']).parent.name}/{Path(q['b']).name} |" for q in pairs]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
