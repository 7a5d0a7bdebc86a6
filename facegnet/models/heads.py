"""Margin classification heads for face training: ArcFace and CosFace on a normalised classifier.

Both hold one weight vector per identity; logits are ``s · cos θ`` between the L2-normalised embedding and
the L2-normalised class weights, with a margin applied to the true class only:

- ArcFace (Deng et al. 2019): ``s · cos(θ + m)``, additive angular margin (defaults s=64, m=0.5);
- CosFace (Wang et al. 2018): ``s · (cos θ − m)``, additive cosine margin (defaults s=64, m=0.35).

As in insightface's ``arcface_torch``, ArcFace falls back to ``cos θ − m·sin m`` once ``θ + m`` would pass π,
so the target logit stays monotonic in θ. Faces with label -1 (no usable identity) get no margin and are
ignored by :meth:`MarginHead.loss`.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class MarginHead(nn.Module):
    """Normalised classifier; subclasses define the margin on the target cosine."""

    def __init__(self, embedding_size: int, num_classes: int, s: float = 64.0, m: float = 0.5) -> None:
        super().__init__()
        self.embedding_size, self.num_classes, self.s, self.m = embedding_size, num_classes, float(s), float(m)
        self.weight = nn.Parameter(torch.empty(num_classes, embedding_size))
        nn.init.normal_(self.weight, std=0.01)

    def cosine(self, embeddings: torch.Tensor) -> torch.Tensor:
        """(N, C) cosine between each embedding and each class centre."""
        return F.linear(F.normalize(embeddings.float(), dim=1), F.normalize(self.weight.float(), dim=1)).clamp(-1, 1)

    def margin(self, target_cos: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Scaled logits (N, C) with the margin applied at each face's true class (none where label is -1)."""
        cos = self.cosine(embeddings)
        rows = torch.nonzero(labels >= 0).squeeze(1)
        if rows.numel():
            cols = labels[rows]
            target = cos[rows, cols]
            cos = cos.index_put((rows, cols), self.margin(target))
        return cos * self.s

    def loss(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of the margin logits over the labelled faces (0 when none is labelled)."""
        if not bool((labels >= 0).any()):
            return embeddings.sum() * 0.0
        return F.cross_entropy(self(embeddings, labels), labels, ignore_index=-1)

    def extra_repr(self) -> str:
        return f"embedding_size={self.embedding_size}, num_classes={self.num_classes}, s={self.s}, m={self.m}"


class ArcFace(MarginHead):
    """Additive angular margin: target logit ``s · cos(θ + m)``."""

    def __init__(self, embedding_size: int, num_classes: int, s: float = 64.0, m: float = 0.5) -> None:
        super().__init__(embedding_size, num_classes, s, m)
        self.cos_m, self.sin_m = math.cos(m), math.sin(m)
        self.theta = math.cos(math.pi - m)  # beyond this cosine, θ + m > π
        self.sinmm = math.sin(math.pi - m) * m

    def margin(self, target_cos: torch.Tensor) -> torch.Tensor:
        sin = torch.sqrt((1.0 - target_cos * target_cos).clamp_min(1e-7))
        shifted = target_cos * self.cos_m - sin * self.sin_m  # cos(θ + m)
        return torch.where(target_cos > self.theta, shifted, target_cos - self.sinmm)


class CosFace(MarginHead):
    """Additive cosine margin: target logit ``s · (cos θ − m)``."""

    def __init__(self, embedding_size: int, num_classes: int, s: float = 64.0, m: float = 0.35) -> None:
        super().__init__(embedding_size, num_classes, s, m)

    def margin(self, target_cos: torch.Tensor) -> torch.Tensor:
        return target_cos - self.m


HEADS: dict[str, type[MarginHead]] = {"arcface": ArcFace, "cosface": CosFace}


def build_head(kind: str, embedding_size: int, num_classes: int, s: float = 64.0, m: float | None = None) -> MarginHead:
    """A margin head by name (``arcface`` or ``cosface``); ``m`` None uses the kind's default."""
    try:
        cls = HEADS[kind.lower()]
    except KeyError:
        raise ValueError(f"unknown head {kind!r} (choose from {', '.join(HEADS)})") from None
    kwargs = {"s": s} if m is None else {"s": s, "m": m}
    return cls(embedding_size, num_classes, **kwargs)
