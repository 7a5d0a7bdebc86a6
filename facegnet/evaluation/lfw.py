"""Verification benchmarks in LFW's layout: ``images/<Name>/<Name>_NNNN.jpg`` plus a ``pairs.txt``.

``pairs.txt`` starts with a header line ``<folds> <pairs>``: each fold holds that many same-person lines
(``Name i j``) followed by as many different-person lines (``Name1 i Name2 j``). The full pipeline
(detection, alignment, embedding) runs on every distinct image once; the report follows the standard
protocol (10-fold accuracy, each fold's threshold chosen on the other folds) and adds ROC AUC, TAR at
FAR 1e-3 and 1e-2, and precision, recall and F1 at the chosen thresholds.

The 6,000 pairs hold only 3,000 impostor pairs, so a handful of them decide TAR at FAR 1e-3. The all-pairs
figure (:func:`all_pairs_report`) scores every image under ``images/`` against every other instead: impostor pairs
between all images of different people (LFW: 87.3M), genuine pairs among each person's first 10 photos
(14,508; uncapped, George_W_Bush alone would give 58% of them), and reports TAR at FAR 1e-3 and 1e-4.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from facegnet.errors import DataError
from facegnet.evaluation.metrics import all_pairs_tar_at_far, roc_curve, verification_report

#: Genuine pairs of the all-pairs figure come from at most this many photos of each person.
MAX_PHOTOS_PER_PERSON = 10
#: False-accept rates the all-pairs figure reports TAR at.
ALL_PAIRS_FARS = (1e-3, 1e-4)


@dataclass
class PairsProtocol:
    """The pairs of a benchmark: image paths, same/different labels and fold numbers."""

    root: Path
    a: list[Path]
    b: list[Path]
    same: np.ndarray  # bool (P,)
    folds: np.ndarray  # int (P,)

    def __len__(self) -> int:
        return len(self.a)

    @property
    def images(self) -> list[Path]:
        """Every distinct image, in first-use order."""
        return list(dict.fromkeys(self.a + self.b))


def _image_path(root: Path, name: str, number: str, source: Path, line: int) -> Path:
    try:
        index = int(number)
    except ValueError:
        raise DataError(f"line {line}: image number {number!r} is not an integer", source) from None
    return root / "images" / name / f"{name}_{index:04d}.jpg"


def read_pairs(root: str | Path, pairs_file: str = "pairs.txt", limit: int | None = None) -> PairsProtocol:
    """Read a benchmark directory in LFW's layout.

    ``limit`` keeps only the first ``limit`` same and different pairs of each fold (quick checks).
    """
    root = Path(root)
    source = root / pairs_file
    if not source.is_file():
        raise DataError(f"no {pairs_file} here (expected LFW's layout: images/ and {pairs_file})", root)
    lines = [line.split() for line in source.read_text().splitlines()]
    lines = [(number, fields) for number, fields in enumerate(lines, 1) if fields]
    if not lines:
        raise DataError("empty pairs file", source)
    header = lines[0][1]
    try:
        folds, per_fold = (int(header[0]), int(header[1])) if len(header) == 2 else (1, int(header[0]))
    except ValueError:
        raise DataError("first line must be '<folds> <pairs per fold>'", source) from None
    body = lines[1:]
    if len(body) != folds * per_fold * 2:
        raise DataError(
            f"header promises {folds} folds × {per_fold} same + {per_fold} different pairs "
            f"({folds * per_fold * 2} lines) but {len(body)} pair lines follow",
            source,
        )
    a, b, same, fold_of = [], [], [], []
    for position, (number, fields) in enumerate(body):
        fold, within = divmod(position, 2 * per_fold)
        is_same = within < per_fold
        if limit is not None and within % per_fold >= limit:
            continue
        if is_same and len(fields) == 3:
            name, i, j = fields
            pa, pb = _image_path(root, name, i, source, number), _image_path(root, name, j, source, number)
        elif not is_same and len(fields) == 4:
            pa = _image_path(root, fields[0], fields[1], source, number)
            pb = _image_path(root, fields[2], fields[3], source, number)
        else:
            kind = "same-person 'Name i j'" if is_same else "different-person 'Name1 i Name2 j'"
            raise DataError(f"line {number}: expected a {kind} line", source)
        a.append(pa)
        b.append(pb)
        same.append(is_same)
        fold_of.append(fold)
    return PairsProtocol(root, a, b, np.array(same, dtype=bool), np.array(fold_of, dtype=int))


def list_images(root: str | Path) -> tuple[list[Path], list[str]]:
    """Every image of a benchmark in LFW's layout (``images/<Name>/*.jpg``) and its person, by name and then
    by file name, so each person's first photos come first."""
    folder = Path(root) / "images"
    if not folder.is_dir():
        raise DataError("no images/ folder (expected LFW's layout: images/<Name>/<Name>_NNNN.jpg)", root)
    paths, people = [], []
    for person in sorted(p for p in folder.iterdir() if p.is_dir()):
        for path in sorted(person.glob("*.jpg")):
            paths.append(path)
            people.append(person.name)
    return paths, people


def evaluate_pairs(recognizer, protocol: PairsProtocol, progress: bool = True, all_pairs: bool = True) -> dict[str, Any]:
    """Run the full pipeline on every distinct image of ``protocol`` and score its pairs.

    Images where MTCNN finds no face are embedded from their central crop (LFW photos are centred on
    their subject) and counted; where an image holds several faces, the one nearest the centre is used.
    Returns the report (see :func:`facegnet.evaluation.metrics.verification_report`) plus ``scores``/``labels`` arrays;
    with ``all_pairs``, every image under ``images/`` is embedded too and the report's ``all_pairs`` entry holds
    :func:`all_pairs_report`'s figures.
    """
    images = protocol.images
    missing = [str(path) for path in images if not path.is_file()]
    if missing:
        raise DataError(f"{len(missing)} images of the pairs file are missing, e.g. {missing[0]}", protocol.root)
    everything, people = list_images(protocol.root) if all_pairs else ([], [])
    if all_pairs and len(set(people)) < 2:
        raise DataError("the all-pairs figure needs photos of at least two people under images/", protocol.root)
    embedded = list(dict.fromkeys(images + everything))
    started = time.perf_counter()
    results = recognizer.embed_images(embedded, select="center", fallback_center=True,
                                      progress=progress and "LFW images")
    elapsed = time.perf_counter() - started
    unreadable = [r for r in results if not r.ok]
    if unreadable:
        raise DataError(f"{unreadable[0].source}: {unreadable[0].error}", protocol.root)
    index = {path: i for i, path in enumerate(embedded)}
    all_embeddings = np.stack([r.embedding for r in results])
    embeddings = all_embeddings[: len(images)]  # the pairs' images come first
    all_results, results = results, results[: len(images)]
    ia = np.array([index[p] for p in protocol.a])
    ib = np.array([index[p] for p in protocol.b])
    scores = np.einsum("ij,ij->i", embeddings[ia], embeddings[ib])
    report = verification_report(scores, protocol.same, protocol.folds)
    report.update(at_threshold(scores, protocol.same, recognizer.threshold))
    no_face = [r.source for r in results if r.fallback]
    report.update(
        {
            "images": len(images),
            "images_without_face": len(no_face),
            "images_without_face_list": no_face,
            "no_face_handling": "embedded the central crop (56% of the shorter side) instead",
            "images_with_several_faces": sum(r.faces > 1 for r in results),
            "face_selection": "the face nearest the image centre",
            "detection_rate": 1.0 - len(no_face) / len(images),
            "images_embedded": len(embedded),
            "seconds": round(elapsed, 1),
            "ms_per_image": round(1000 * elapsed / len(embedded), 2),
            "folds": int(len(np.unique(protocol.folds))),
            "model": recognizer.card.name,
            "fingerprint": recognizer.fingerprint,
            "flip": recognizer.embedder.flip,
        }
    )
    if all_pairs:
        rows = np.array([index[p] for p in everything], dtype=np.int64)
        report["all_pairs"] = all_pairs_report(all_embeddings[rows], people, [p.stem for p in everything])
        report["all_pairs"]["images_without_face"] = sum(all_results[i].fallback for i in rows.tolist())
    report["scores"], report["labels"] = scores, protocol.same
    return report


def all_pairs_report(embeddings: np.ndarray, people: list[str], names: list[str] | None = None,
                     max_per_person: int = MAX_PHOTOS_PER_PERSON,
                     fars: tuple[float, ...] = ALL_PAIRS_FARS) -> dict[str, Any]:
    """TAR at ``fars`` over all pairs of the images whose ``embeddings`` (unit rows, in :func:`list_images`'
    order) and ``people`` are given: genuine pairs among each person's first ``max_per_person`` photos,
    impostor pairs between every two photos of different people. ``names`` (one per image) name the most alike
    impostor pair."""
    started = time.perf_counter()
    report = all_pairs_tar_at_far(embeddings, np.asarray(people), fars=fars, max_per_person=max_per_person)
    report["images"] = report.pop("items")
    i, j = report.pop("highest_impostor_pair")
    if i >= 0:  # named, so a duplicate photo filed under two people can be looked at
        report["highest_impostor_pair"] = [names[i], names[j]] if names else [i, j]
    report["seconds"] = round(time.perf_counter() - started, 1)
    return report


def at_threshold(scores: np.ndarray, labels: np.ndarray, threshold: float) -> dict[str, float]:
    """Accuracy, TAR and FAR at one fixed threshold: the model card's, the one ``verify`` decides with.

    The k-fold figures choose thresholds on the benchmark itself; these say how the calibrated one does there.
    """
    accepted = np.asarray(scores) >= threshold
    labels = np.asarray(labels, bool)
    return {
        "card_threshold": float(threshold),
        "accuracy@card_threshold": float((accepted == labels).mean()),
        "tar@card_threshold": float(accepted[labels].mean()) if labels.any() else 0.0,
        "far@card_threshold": float(accepted[~labels].mean()) if (~labels).any() else 0.0,
    }


def plot_roc(scores: np.ndarray, labels: np.ndarray, path: str | Path, title: str = "ROC") -> Path:
    """Save the ROC curve (TAR against FAR, log FAR axis) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fpr, tpr, _ = roc_curve(scores, labels)
    figure, axis = plt.subplots(figsize=(6, 4.5), dpi=120)
    keep = fpr > 0
    axis.semilogx(fpr[keep], tpr[keep], lw=2)
    floor = 1.0 / max(1, int((~np.asarray(labels, bool)).sum()))
    chance = np.logspace(np.log10(floor), 0, 200)  # TAR = FAR, a curve on a log axis
    axis.plot(chance, chance, ls="--", color="grey", lw=1, label="chance")
    axis.set_xlim(floor, 1)
    axis.set_ylim(0, 1.01)
    axis.set_xlabel("false accept rate (log scale)")
    axis.set_ylabel("true accept rate")
    axis.set_title(title)
    axis.grid(True, which="both", alpha=0.3)
    axis.legend(loc="lower right")
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return path
