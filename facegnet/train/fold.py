"""Fold the online teacher's projection into the embedding layer, so the shipped vector carries what it learnt.

Training with ``--teacher-model`` fits a linear map ``W`` from the student's unit embedding ``e`` into the
teacher's space (the ``online`` distillation projection). Scored on the dev pairs, the concatenation of ``e``
with its projection ``kWe`` (``k`` makes it unit length on average) separates people better than either alone
(the shipped model's run: 94.78% against 94.22% for ``e`` alone; docs/training.md). The cosine of
two such concatenations, ``e₁ᵀ(I + k²WᵀW)e₂`` up to the norms, is the cosine of ``Le₁`` and ``Le₂`` with
``L = (I + k²WᵀW)^½`` (``k`` times the fold weight, in general): one symmetric D×D matrix, so the embedding keeps
its size and the network its architecture. :func:`fold_linear` multiplies ``L`` into the last 1×1 convolution
and re-derives the last BatchNorm so that the network in eval mode computes exactly ``L·net(x)``, and a later
fine-tune in training mode sees the same scale. The network runs once over the faces that measure the fold
(:func:`embedding_inputs`): everything after that convolution is linear.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from facegnet.errors import DataError
from facegnet.train import datasets as D
from facegnet.train.config import TrainConfig
from facegnet.train.warmstart import sample_index

__all__ = ["check_weight", "embedding_inputs", "fold_checkpoint", "fold_faces", "fold_linear", "fold_teacher",
           "fold_view", "online_projection", "teacher_metric"]


def fold_view(embeddings: torch.Tensor, projection: nn.Module, weight: float = 1.0) -> torch.Tensor:
    """``[e, weight·k·We]`` for the unit rows ``e`` of ``embeddings`` (N×D) and the projection ``W``: the vector
    whose cosines the fold with ``weight`` ships (:func:`teacher_metric`), here with ``k`` measured on these rows.
    The trainer's dev evaluation scores it (``"folded"``). (N, D+T)."""
    e = F.normalize(embeddings.float(), dim=1)
    projected = projection(e)
    k = 1.0 / projected.detach().norm(dim=1).mean().clamp_min(1e-12)
    return torch.cat([e, (weight * k) * projected], dim=1)


@torch.no_grad()
def teacher_metric(projection: torch.Tensor, embeddings: torch.Tensor,
                   weight: float = 1.0) -> tuple[torch.Tensor, float]:
    """``L = (I + (weight·k)²·WᵀW)^½`` for ``W = projection`` (T×D) and the scale ``k`` that makes the projected
    ``embeddings`` (N×D, unit rows) unit length on average. Returns ``L`` (D×D, symmetric) and ``k``."""
    w = projection.double()
    k = float(1.0 / (embeddings.double() @ w.T).norm(dim=1).mean())
    metric = torch.eye(w.shape[1], dtype=torch.float64) + (weight * k) ** 2 * (w.T @ w)
    values, vectors = torch.linalg.eigh(metric)
    return ((vectors * values.clamp_min(0).sqrt()) @ vectors.T).float(), k


@torch.no_grad()
def embedding_inputs(net: nn.Module, images: np.ndarray, batch: int = 256) -> torch.Tensor:
    """What ``net``'s last 1×1 convolution sees for each of ``images`` (uint8 crops, one view, eval mode): (N, F).

    Everything after it is linear, so the network's embeddings before and after a fold both follow from these,
    and the network runs once."""
    features: list[torch.Tensor] = []
    hook = net.embedding.register_forward_pre_hook(lambda _m, args: features.append(args[0].flatten(1).double()))
    was_training = net.training
    net.eval()
    try:
        for i in range(0, len(images), batch):
            net(D.to_input(torch.from_numpy(images[i : i + batch])))
    finally:
        hook.remove()
        net.train(was_training)
    return torch.cat(features)


@torch.no_grad()
def fold_linear(net: nn.Module, matrix: torch.Tensor, features: torch.Tensor) -> None:
    """Make ``net`` (a GhostFaceNet: ``embedding`` 1×1 conv, then ``bn_embedding``) compute ``matrix @ net(x)``.

    The eval-mode BatchNorm is an affine map, so ``matrix`` times it is the convolution's new weight plus a shift;
    the new BatchNorm's statistics are those of the new convolution on ``features`` (:func:`embedding_inputs` of
    some faces) and its scale and shift undo them: exact in eval mode, and a fine-tune's batch normalisation in
    training mode starts at the same scale.
    """
    conv, bn = net.embedding, net.bn_embedding
    matrix = matrix.double()
    scale = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).double()
    shift = bn.bias.double() - scale * bn.running_mean.double()
    weight = matrix @ (scale[:, None] * conv.weight.flatten(1).double())
    conv.weight.copy_(weight.view_as(conv.weight).to(conv.weight.dtype))
    z = features.double() @ weight.T
    mean, var = z.mean(0), z.var(0, unbiased=False)
    bn.running_mean.copy_(mean.to(bn.running_mean.dtype))
    bn.running_var.copy_(var.to(bn.running_var.dtype))
    bn.weight.copy_(torch.sqrt(var + bn.eps).to(bn.weight.dtype))
    bn.bias.copy_((mean + matrix @ shift).to(bn.bias.dtype))


def check_weight(weight: float) -> None:
    """A fold weight must be positive (0 is no fold; a negative one would square to a positive one)."""
    if not weight > 0:
        raise DataError(f"a fold weight (--fold-teacher) must be positive, not {weight:g}")


def fold_teacher(net: nn.Module, projection: torch.Tensor, images: np.ndarray, weight: float = 1.0) -> dict[str, float]:
    """Fold ``L`` of :func:`teacher_metric` into ``net`` (the scale ``k`` and the statistics measured on ``images``,
    one view, never dev or LFW); returns what the card records (the weight, the measured scale, the faces)."""
    check_weight(weight)
    features = embedding_inputs(net, images)
    with torch.no_grad():  # the unfolded network's unit embeddings, from the same pass
        raw = net.bn_embedding.eval()(F.linear(features.float(), net.embedding.weight.flatten(1)))
    matrix, k = teacher_metric(projection.float(), F.normalize(raw, dim=1), weight)
    fold_linear(net, matrix, features)
    return {"weight": float(weight), "scale": round(k, 6), "faces": int(len(images))}


def online_projection(state: dict[str, Any], path: Path) -> torch.Tensor:
    """The online teacher's trained projection ``W`` of a training checkpoint; :class:`DataError` naming ``path``
    when the run had no online teacher."""
    projection = state.get("module", {}).get("online.proj.weight")
    if projection is None:
        raise DataError("folding the teacher needs a checkpoint trained with --teacher-model "
                        "(no online projection in it)", path)
    return projection


def fold_faces(cfg: TrainConfig, sample: int = 4096) -> np.ndarray:
    """A fixed sample of the run's own training faces (uint8 crops): what the fold measures its scale on."""
    root = Path(cfg.data)
    faces = (D.load_pack(root, "train", cfg.min_faces, teacher=None, cache=cfg.cache, limit=cfg.limit)
             if D.is_pack(root) else D.load_prepared(root, cfg.min_faces, cache=cfg.cache, limit=cfg.limit))
    return faces.images[sample_index(len(faces), sample, cfg.seed)]


def fold_checkpoint(net: nn.Module, state: dict[str, Any], cfg: TrainConfig, weight: float,
                    path: Path) -> dict[str, Any]:
    """Fold the training checkpoint ``state``'s online projection into ``net`` (its network) with ``weight``, measured
    on :func:`fold_faces`; returns what the card records."""
    projection = online_projection(state, path)
    check_weight(weight)  # before loading any faces
    return {"projection": "online", **fold_teacher(net, projection, fold_faces(cfg), weight)}
