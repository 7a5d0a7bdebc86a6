"""Verification scores on held-out pairs during training (the pack's dev split; never LFW).

:func:`evaluate_pairs` embeds the dev crops (with horizontal-flip test-time augmentation, as the embedder
does), takes the cosine similarity of every pair and reports the accuracy at the best threshold, 10-fold
cross-validated accuracy, ROC AUC, TAR at FAR 1e-2 and 1e-3 and the thresholds that reach those FARs.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from facegnet.evaluation import metrics
from facegnet.preprocess import embed_normalised
from facegnet.train.datasets import to_input


@torch.no_grad()
def embed_crops(net: nn.Module, images: np.ndarray, device: torch.device | str = "cpu", batch: int = 256,
                flip: bool = True) -> np.ndarray:
    """L2-normalised embeddings (N, D) of uint8 (N, 112, 112, 3) crops, by the embedder's own procedure
    (:func:`facegnet.preprocess.embed_normalised`: flipped view added when ``flip``)."""
    was_training = net.training
    net.eval()
    out = []
    for i in range(0, len(images), batch):
        x = to_input(torch.from_numpy(images[i : i + batch])).to(device)
        out.append(embed_normalised(lambda t: net(t).float(), x, flip).cpu())
    net.train(was_training)
    return torch.cat(out).numpy()


def pair_scores(sims: np.ndarray, same: np.ndarray) -> dict[str, Any]:
    """Accuracy (best threshold and 10-fold), AUC, TAR@FAR and thresholds from pair similarities.

    The figures come from :mod:`facegnet.evaluation.metrics`, as the LFW report's do; folds are a fixed random split of
    the pairs (the dev pairs carry no fold column).
    """
    same = np.asarray(same, dtype=bool)
    best_th, best_acc = metrics.best_threshold(sims, same)
    folds = np.empty(len(sims), dtype=int)
    for k, idx in enumerate(np.array_split(np.random.default_rng(0).permutation(len(sims)), 10)):
        folds[idx] = k
    result: dict[str, Any] = {
        "accuracy": round(best_acc, 5),
        "best_threshold": round(best_th, 5),
        "accuracy_10fold": round(metrics.kfold_accuracy(sims, same, folds)["accuracy"], 5) if len(sims) >= 2 else None,
        "auc": round(metrics.roc_auc(sims, same), 5),
    }
    for far, key in ((1e-2, "1e-2"), (1e-3, "1e-3")):
        tar, th = metrics.tar_at_far(sims, same, far)
        result[f"tar@far{key}"] = round(tar, 5)
        result[f"threshold@far{key}"] = round(th, 5)
    return result


def evaluate_pairs(net: nn.Module, images: np.ndarray, a: np.ndarray, b: np.ndarray, same: np.ndarray,
                   device: torch.device | str = "cpu") -> dict[str, Any]:
    """Scores of ``net`` on pairs ``(a[i], b[i])`` of ``images`` (indices), ``same`` the ground truth."""
    emb = embed_crops(net, images, device)
    sims = (emb[a] * emb[b]).sum(1)
    return pair_scores(sims, np.asarray(same, dtype=bool))
