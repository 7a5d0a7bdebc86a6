"""Fold the online teacher's projection into the embedding layer, so the shipped vector carries what it learnt.

Training with ``--teacher-model`` fits a linear map ``W`` from the student's unit embedding ``e`` into the
teacher's space (the ``online`` distillation projection). Scored on the dev pairs, the concatenation of ``e`` with
its projection ``We`` (each about unit length) separates people better than either alone (in the twelfth session,
94.78% against 94.27% for ``e`` alone; docs/training.md). The cosine of two such concatenations,
``e₁ᵀ(I + s²WᵀW)e₂`` up to the norms, is the cosine of ``Le₁`` and ``Le₂`` with ``L = (I + s²WᵀW)^½``: one
symmetric D×D matrix, so the embedding keeps its size and the network its architecture. :func:`fold_linear`
multiplies ``L`` into the last 1×1 convolution and re-derives the last BatchNorm so that the network in eval
mode computes exactly ``L·net(x)``, and a later fine-tune in training mode sees the same scale.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from facegnet.errors import DataError
from facegnet.train import data as D
from facegnet.train.config import TrainConfig
from facegnet.train.evaluate import embed_crops
from facegnet.train.warmstart import sample_index

__all__ = ["fold_checkpoint", "fold_linear", "fold_teacher", "teacher_metric"]


@torch.no_grad()
def teacher_metric(projection: torch.Tensor, embeddings: torch.Tensor, weight: float = 1.0) -> tuple[torch.Tensor, float]:
    """``L = (I + (weight·k)²·WᵀW)^½`` for ``W = projection`` (T×D) and the scale ``k`` that makes the projected
    ``embeddings`` (N×D, unit rows) unit length on average. Returns ``L`` (D×D, symmetric) and ``k``."""
    w = projection.double()
    k = float(1.0 / (embeddings.double() @ w.T).norm(dim=1).mean())
    metric = torch.eye(w.shape[1], dtype=torch.float64) + (weight * k) ** 2 * (w.T @ w)
    values, vectors = torch.linalg.eigh(metric)
    return ((vectors * values.clamp_min(0).sqrt()) @ vectors.T).float(), k


@torch.no_grad()
def fold_linear(net: nn.Module, matrix: torch.Tensor, images: np.ndarray, batch: int = 256) -> None:
    """Make ``net`` (a GhostFaceNet: ``embedding`` 1×1 conv, then ``bn_embedding``) compute ``matrix @ net(x)``.

    The eval-mode BatchNorm is an affine map, so ``matrix`` times it is the convolution's new weight plus a shift;
    the new BatchNorm's statistics are measured on ``images`` (uint8 crops) and its scale and shift undo them,
    which is exact in eval mode and keeps training mode's batch normalisation at the same scale.
    """
    conv, bn = net.embedding, net.bn_embedding
    matrix = matrix.to(conv.weight.dtype)
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    shift = bn.bias - scale * bn.running_mean
    weight = matrix @ (scale[:, None] * conv.weight.flatten(1))
    conv.weight.copy_(weight.view_as(conv.weight))
    outputs: list[torch.Tensor] = []
    hook = conv.register_forward_hook(lambda _m, _i, out: outputs.append(out.flatten(1).double()))
    was_training = net.training
    net.eval()
    try:
        for i in range(0, len(images), batch):
            net(D.to_input(torch.from_numpy(images[i : i + batch])))
    finally:
        hook.remove()
        net.train(was_training)
    z = torch.cat(outputs)
    mean, var = z.mean(0), z.var(0, unbiased=False)
    bn.running_mean.copy_(mean.to(bn.running_mean.dtype))
    bn.running_var.copy_(var.to(bn.running_var.dtype))
    bn.weight.copy_(torch.sqrt(var + bn.eps).to(bn.weight.dtype))
    bn.bias.copy_((mean + (matrix.double() @ shift.double())).to(bn.bias.dtype))


def fold_teacher(net: nn.Module, projection: torch.Tensor, images: np.ndarray, weight: float = 1.0) -> dict[str, float]:
    """Fold ``L`` of :func:`teacher_metric` (scale measured on ``images``, single view) into ``net``; returns what
    the card records (the weight and the measured scale)."""
    embeddings = torch.from_numpy(embed_crops(net, images, flip=False))
    matrix, k = teacher_metric(projection.float(), embeddings, weight)
    fold_linear(net, matrix, images)
    return {"weight": float(weight), "scale": round(k, 6), "faces": int(len(images))}


def fold_checkpoint(net: nn.Module, state: dict[str, Any], cfg: TrainConfig, weight: float, path: Path,
                    sample: int = 4096) -> dict[str, Any]:
    """Fold the training checkpoint ``state``'s online projection into ``net`` (its network) with ``weight``; the
    scale and statistics come from a fixed sample of the run's own training faces (never dev or LFW). Returns
    what the card records; :class:`DataError` naming ``path`` when the run had no online teacher."""
    if not weight > 0:
        raise DataError(f"--fold-teacher must be a positive weight, not {weight}")
    projection = state.get("module", {}).get("online.proj.weight")
    if projection is None:
        raise DataError("--fold-teacher needs a checkpoint trained with --teacher-model (no online projection in it)",
                        path)
    root = Path(cfg.data)
    faces = (D.load_pack(root, "train", cfg.min_faces, teacher=None, cache=cfg.cache, limit=cfg.limit)
             if D.is_pack(root) else D.load_prepared(root, cfg.min_faces, cache=cfg.cache, limit=cfg.limit))
    images = faces.images[sample_index(len(faces), sample, cfg.seed)]
    return {"projection": "online", **fold_teacher(net, projection, images, weight)}
