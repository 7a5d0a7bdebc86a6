"""Verification metrics from pair similarities: ROC, AUC, TAR at a FAR, k-fold accuracy, P/R/F1, and TAR at
a FAR over all pairs of a set of embeddings (every item against every other, in blocks).

Conventions: ``scores`` are similarities (higher = more alike), ``labels`` are True for same-person pairs,
a pair is accepted as "same" when its score is at or above the threshold.
"""
from __future__ import annotations

from typing import Any

import numpy as np


def _as_arrays(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(labels).astype(bool).ravel()
    if scores.shape != labels.shape or scores.size == 0:
        raise ValueError("scores and labels must be non-empty and of equal length")
    return scores, labels


def roc_curve(scores, labels) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """False-accept rates, true-accept rates and the thresholds that give them (thresholds decreasing)."""
    scores, labels = _as_arrays(scores, labels)
    order = np.argsort(-scores, kind="mergesort")
    scores, labels = scores[order], labels[order]
    distinct = np.r_[np.nonzero(np.diff(scores))[0], scores.size - 1]  # last index of each tied run
    tp = np.cumsum(labels)[distinct]
    fp = (distinct + 1) - tp
    positives, negatives = max(labels.sum(), 1), max((~labels).sum(), 1)
    fpr = np.r_[0.0, fp / negatives]
    tpr = np.r_[0.0, tp / positives]
    thresholds = np.r_[np.inf, scores[distinct]]
    return fpr, tpr, thresholds


def roc_auc(scores, labels) -> float:
    """Area under the ROC curve (trapezoidal; ties handled as one step)."""
    fpr, tpr, _ = roc_curve(scores, labels)
    return float(np.trapezoid(tpr, fpr)) if hasattr(np, "trapezoid") else float(np.trapz(tpr, fpr))


def threshold_at_far(scores, labels, far: float) -> float:
    """The lowest threshold whose false-accept rate on these pairs is at most ``far``."""
    scores, labels = _as_arrays(scores, labels)
    negatives = np.sort(scores[~labels])[::-1]
    if negatives.size == 0:
        return float(scores.min())
    allowed = int(np.floor(far * negatives.size))  # this many negatives may score at or above it
    if allowed >= negatives.size:
        return float(negatives[-1])
    return float(np.nextafter(negatives[allowed], np.inf))


def tar_at_far(scores, labels, far: float) -> tuple[float, float]:
    """True-accept rate at the threshold of :func:`threshold_at_far`, and that threshold."""
    scores, labels = _as_arrays(scores, labels)
    threshold = threshold_at_far(scores, labels, far)
    return float((scores[labels] >= threshold).mean()), threshold


def best_threshold(scores, labels) -> tuple[float, float]:
    """The threshold of highest accuracy on these pairs (midway between neighbouring scores) and that accuracy."""
    scores, labels = _as_arrays(scores, labels)
    order = np.argsort(-scores, kind="mergesort")
    s, y = scores[order], labels[order]
    # Accepting the top k pairs: correct = positives among them + negatives among the rest.
    correct = np.r_[0, np.cumsum(y)] + ((~y).sum() - np.r_[0, np.cumsum(~y)])
    valid = np.r_[True, s[1:] < s[:-1], True]  # cut only between distinct scores
    correct = np.where(valid, correct, -1)
    k = int(np.argmax(correct))
    if k == 0:
        threshold = s[0] + 1e-6
    elif k == s.size:
        threshold = s[-1] - 1e-6
    else:
        threshold = (s[k - 1] + s[k]) / 2
    return float(threshold), float(correct[k] / s.size)


def confusion(scores, labels, threshold) -> dict[str, int]:
    """True/false positives/negatives at a threshold (scalar, or one per pair)."""
    scores, labels = _as_arrays(scores, labels)
    predicted = scores >= threshold
    return {
        "tp": int((predicted & labels).sum()),
        "fp": int((predicted & ~labels).sum()),
        "tn": int((~predicted & ~labels).sum()),
        "fn": int((~predicted & labels).sum()),
    }


def precision_recall_f1(counts: dict[str, int]) -> tuple[float, float, float]:
    """Precision, recall and F1 from confusion counts (0 where a ratio is undefined)."""
    tp, fp, fn = counts["tp"], counts["fp"], counts["fn"]
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def kfold_accuracy(scores, labels, folds) -> dict[str, Any]:
    """LFW protocol: for each fold, the threshold of best accuracy on the other folds, applied to this fold.

    Returns the mean and (population) standard deviation of the fold accuracies, the per-fold figures and,
    pooled over all folds at their own thresholds, precision, recall and F1.
    """
    scores, labels = _as_arrays(scores, labels)
    folds = np.asarray(folds).ravel()
    fold_ids = np.unique(folds)
    if fold_ids.size < 2:
        raise ValueError("k-fold accuracy needs at least two folds")
    accuracies, thresholds = [], []
    per_pair_threshold = np.empty_like(scores)
    for fold in fold_ids:
        test = folds == fold
        threshold, _ = best_threshold(scores[~test], labels[~test])
        accuracies.append(float(((scores[test] >= threshold) == labels[test]).mean()))
        thresholds.append(threshold)
        per_pair_threshold[test] = threshold
    counts = confusion(scores, labels, per_pair_threshold)
    precision, recall, f1 = precision_recall_f1(counts)
    return {
        "accuracy": float(np.mean(accuracies)),
        "accuracy_std": float(np.std(accuracies)),
        "fold_accuracies": accuracies,
        "fold_thresholds": thresholds,
        "threshold": float(np.mean(thresholds)),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "confusion": counts,
    }


def verification_report(scores, labels, folds=None, fars=(1e-3, 1e-2)) -> dict[str, Any]:
    """Everything the LFW report quotes: k-fold accuracy ± std, AUC, TAR at each FAR, P/R/F1."""
    scores, labels = _as_arrays(scores, labels)
    if folds is None:
        folds = np.arange(scores.size) % 10
    report = kfold_accuracy(scores, labels, folds)
    report["auc"] = roc_auc(scores, labels)
    for far in fars:
        tar, threshold = tar_at_far(scores, labels, far)
        report[f"tar@far={far:g}"] = tar
        report[f"threshold@far={far:g}"] = threshold
    report["pairs"] = int(scores.size)
    report["same_pairs"] = int(labels.sum())
    return report


def genuine_subset(people, max_per_person: int | None = 10) -> np.ndarray:
    """Which items take part in genuine pairs: the first ``max_per_person`` of each person, in array order.

    A few people with hundreds of photos would otherwise give most genuine pairs (LFW's George_W_Bush alone 58%).
    """
    people = np.asarray(people).ravel()
    if max_per_person is None:
        return np.ones(people.size, dtype=bool)
    _, inverse = np.unique(people, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    starts = np.r_[0, np.flatnonzero(np.diff(inverse[order])) + 1]
    rank = np.empty(people.size, dtype=np.int64)
    rank[order] = np.arange(people.size) - np.repeat(starts, np.diff(np.r_[starts, people.size]))
    return rank < max_per_person


def all_pairs_tar_at_far(embeddings, people, fars=(1e-3, 1e-4), max_per_person: int | None = 10,
                         chunk: int = 1024) -> dict[str, Any]:
    """TAR at each FAR over every pair of items: genuine pairs among each person's first ``max_per_person`` items,
    impostor pairs between all items of different people. Scores are inner products of the embeddings.

    The impostor pairs grow with the square of the items (LFW's 13,233 images: 87.3M), so the score matrix is
    computed in row blocks of its upper triangle and only the highest impostor scores are kept, exactly as many
    as the largest FAR lets through plus one: the thresholds (and so the TARs) are exactly those
    :func:`threshold_at_far` and :func:`tar_at_far` give on the full list of pair scores.
    """
    emb = np.ascontiguousarray(embeddings, dtype=np.float32)
    people = np.asarray(people).ravel()
    if emb.ndim != 2 or len(emb) != people.size or people.size < 2:
        raise ValueError("need one embedding row per item and at least two items")
    _, person = np.unique(people, return_inverse=True)
    sizes = np.bincount(person)
    n = people.size
    impostors = n * (n - 1) // 2 - int((sizes * (sizes - 1) // 2).sum())
    capped = genuine_subset(person, max_per_person)
    keep = int(np.floor(max(fars) * impostors)) + 1  # the top scores any threshold below needs
    top = np.empty(0, dtype=np.float32)
    floor = -np.inf  # scores at or below the current keep-th highest cannot enter the top
    genuine = []
    highest, highest_pair = -np.inf, (-1, -1)
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        scores = emb[start:stop] @ emb[start:].T  # rows start..stop against columns start..n-1
        rows = np.arange(start, stop)[:, None]
        cols = np.arange(start, n)[None, :]
        upper = cols > rows
        same = person[start:stop, None] == person[None, start:]
        pick = upper & same & capped[start:stop, None] & capped[None, start:]
        genuine.append(scores[pick])
        candidates = scores > floor
        candidates &= upper & ~same
        if candidates.any():
            rows_at, cols_at = np.nonzero(candidates)
            values = scores[rows_at, cols_at]
            best = int(np.argmax(values))
            if values[best] > highest:  # the most alike impostor pair: often a label error of the benchmark
                highest, highest_pair = float(values[best]), (start + int(rows_at[best]), start + int(cols_at[best]))
            top = np.concatenate([top, values])
            if top.size > keep:
                top = np.partition(top, top.size - keep)[-keep:]
                floor = top.min()
    genuine_scores = np.concatenate(genuine).astype(np.float64)
    top = np.sort(top.astype(np.float64))[::-1]
    report: dict[str, Any] = {
        "items": int(n),
        "people": int(sizes.size),
        "max_per_person": max_per_person,
        "genuine_pairs": int(genuine_scores.size),
        "impostor_pairs": int(impostors),
    }
    for far in fars:
        allowed = int(np.floor(far * impostors))  # as threshold_at_far: this many impostors may score at or above
        if top.size == 0:  # no impostor pairs: everything is accepted
            threshold = float(genuine_scores.min()) if genuine_scores.size else 0.0
        else:
            threshold = float(np.nextafter(top[allowed], np.inf)) if allowed < top.size else float(top[-1])
        tar = float((genuine_scores >= threshold).mean()) if genuine_scores.size else 0.0
        report[f"tar@far={far:g}"] = tar
        report[f"threshold@far={far:g}"] = threshold
    report["highest_impostor"] = float(top[0]) if top.size else float("nan")
    report["highest_impostor_pair"] = list(highest_pair)  # item indices; (-1, -1) without impostor pairs
    return report


__all__ = [
    "roc_curve", "roc_auc", "threshold_at_far", "tar_at_far", "best_threshold", "confusion",
    "precision_recall_f1", "kfold_accuracy", "verification_report", "genuine_subset", "all_pairs_tar_at_far",
]
