"""Verification benchmarks in LFW's layout: ``images/<Name>/<Name>_NNNN.jpg`` plus a ``pairs.txt``.

``pairs.txt`` starts with a header line ``<folds> <pairs>``: each fold holds that many same-person lines
(``Name i j``) followed by as many different-person lines (``Name1 i Name2 j``). The full pipeline
(detection, alignment, embedding) runs on every distinct image once; the report follows the standard
protocol (10-fold accuracy, each fold's threshold chosen on the other folds) and adds ROC AUC, TAR at
FAR 1e-3 and 1e-2, and precision, recall and F1 at the chosen thresholds.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from facegnet.errors import DataError
from facegnet.evaluation.metrics import roc_curve, verification_report


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


def evaluate_pairs(recognizer, protocol: PairsProtocol, progress: bool = True) -> dict[str, Any]:
    """Run the full pipeline on every distinct image of ``protocol`` and score its pairs.

    Images where MTCNN finds no face are embedded from their central crop (LFW photos are centred on
    their subject) and counted; where an image holds several faces, the one nearest the centre is used.
    Returns the report (see :func:`facegnet.evaluation.metrics.verification_report`) plus ``scores``/``labels`` arrays.
    """
    images = protocol.images
    missing = [str(path) for path in images if not path.is_file()]
    if missing:
        raise DataError(f"{len(missing)} images of the pairs file are missing, e.g. {missing[0]}", protocol.root)
    started = time.perf_counter()
    results = recognizer.embed_images(images, select="center", fallback_center=True, progress=progress and "LFW images")
    elapsed = time.perf_counter() - started
    unreadable = [r for r in results if not r.ok]
    if unreadable:
        raise DataError(f"{unreadable[0].source}: {unreadable[0].error}", protocol.root)
    index = {path: i for i, path in enumerate(images)}
    embeddings = np.stack([r.embedding for r in results])
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
            "seconds": round(elapsed, 1),
            "ms_per_image": round(1000 * elapsed / len(images), 2),
            "folds": int(len(np.unique(protocol.folds))),
            "model": recognizer.card.name,
            "fingerprint": recognizer.fingerprint,
            "flip": recognizer.embedder.flip,
        }
    )
    report["scores"], report["labels"] = scores, protocol.same
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
