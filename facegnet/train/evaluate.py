"""Verification scores on held-out pairs during training (the pack's dev split; never LFW).

:func:`evaluate_pairs` embeds the dev crops (with horizontal-flip test-time augmentation, as the embedder
does), takes the cosine similarity of every pair and reports the accuracy at the best threshold, 10-fold
cross-validated accuracy, ROC AUC, TAR at FAR 1e-2 and 1e-3 and the thresholds that reach those FARs.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from facegnet.train.data import to_input


@torch.no_grad()
def embed_crops(net: nn.Module, images: np.ndarray, device: torch.device | str = "cpu", batch: int = 256,
                flip: bool = True) -> np.ndarray:
    """L2-normalised embeddings (N, D) of uint8 (N, 112, 112, 3) crops; sums the flipped view when ``flip``."""
    was_training = net.training
    net.eval()
    out = []
    for i in range(0, len(images), batch):
        x = to_input(torch.from_numpy(images[i : i + batch])).to(device)
        e = net(x).float()
        if flip:  # as facegnet.embed.Embedder does: sum the raw embeddings, then normalise
            e = e + net(x.flip(-1)).float()
        out.append(F.normalize(e, dim=1).cpu())
    net.train(was_training)
    return torch.cat(out).numpy()


def threshold_at_far(sims: np.ndarray, same: np.ndarray, far: float) -> float:
    """Smallest cosine threshold whose false-accept rate (share of different pairs ≥ it) is at most ``far``."""
    neg = np.sort(sims[~same])[::-1]
    k = int(np.floor(far * len(neg)))  # at most k negatives may be accepted
    if k >= len(neg):
        return float(neg[-1])
    return float(np.nextafter(neg[k], np.inf))  # just above the (k+1)-th highest negative


def pair_scores(sims: np.ndarray, same: np.ndarray) -> dict[str, Any]:
    """Accuracy (best threshold and 10-fold), AUC, TAR@FAR and thresholds from pair similarities."""
    same = same.astype(bool)
    order = np.sort(np.unique(sims))
    cands = np.concatenate([[order[0] - 1e-6], (order[:-1] + order[1:]) / 2, [order[-1] + 1e-6]])
    if len(cands) > 2000:
        cands = np.quantile(sims, np.linspace(0, 1, 2001))

    def acc(th: float, idx: np.ndarray) -> float:
        return float(((sims[idx] >= th) == same[idx]).mean())

    all_idx = np.arange(len(sims))
    accs = np.array([acc(t, all_idx) for t in cands])
    best_th = float(cands[accs.argmax()])
    folds = np.array_split(np.random.default_rng(0).permutation(len(sims)), 10)
    fold_accs = []
    for k in range(10):
        if len(folds[k]) == 0:  # fewer than 10 pairs
            continue
        train_idx = np.concatenate([folds[j] for j in range(10) if j != k])
        th = cands[np.argmax([acc(t, train_idx) for t in cands])]
        fold_accs.append(acc(th, folds[k]))
    pos, neg = sims[same], sims[~same]
    # AUC as the probability a same pair scores above a different pair (ties count half).
    ranks = np.argsort(np.argsort(np.concatenate([pos, neg]), kind="mergesort"), kind="mergesort") + 1
    auc = (ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg))
    result: dict[str, Any] = {
        "accuracy": round(float(accs.max()), 5),
        "best_threshold": round(best_th, 5),
        "accuracy_10fold": round(float(np.mean(fold_accs)), 5),
        "auc": round(float(auc), 5),
    }
    for far, key in ((1e-2, "1e-2"), (1e-3, "1e-3")):
        th = threshold_at_far(sims, same, far)
        result[f"tar@far{key}"] = round(float((pos >= th).mean()), 5)
        result[f"threshold@far{key}"] = round(th, 5)
    return result


def evaluate_pairs(net: nn.Module, images: np.ndarray, a: np.ndarray, b: np.ndarray, same: np.ndarray,
                   device: torch.device | str = "cpu") -> dict[str, Any]:
    """Scores of ``net`` on pairs ``(a[i], b[i])`` of ``images`` (indices), ``same`` the ground truth."""
    emb = embed_crops(net, images, device)
    sims = (emb[a] * emb[b]).sum(1)
    return pair_scores(sims, np.asarray(same, dtype=bool))
