"""Knowledge distillation to a teacher's embeddings (e.g. dlib's 128-d descriptors of the training pack).

A small linear projection maps the student's embedding into the teacher's space; the loss compares the
projected vector with the teacher's:

- ``cosine``: 1 − cos between the projection and the teacher *centred* on the pack mean (dlib descriptors
  share a large common component, so raw cosines are all close to 1 and teach little);
- ``mse``: squared Euclidean distance to the raw teacher (dlib compares descriptors by Euclidean distance).

It needs no identity labels, so every face, labelled or not, contributes. Rows whose teacher vector is
missing (NaN) are skipped.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

LOSSES = ("cosine", "mse")


class TeacherDistill(nn.Module):
    """Projection + distillation loss. ``mean`` is the teacher's pack mean (used by the cosine loss)."""

    def __init__(
        self,
        student_dim: int = 512,
        teacher_dim: int = 128,
        loss: str = "cosine",
        mean: np.ndarray | torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        if loss not in LOSSES:
            raise ValueError(f"unknown distillation loss {loss!r} (choose from {', '.join(LOSSES)})")
        self.loss_kind = loss
        # No bias, on the normalised embedding: what the teacher teaches then lives in the vector used at test time.
        self.proj = nn.Linear(student_dim, teacher_dim, bias=False)
        mean_t = torch.zeros(teacher_dim) if mean is None else torch.as_tensor(np.asarray(mean), dtype=torch.float32)
        self.register_buffer("mean", mean_t.clone())

    def target(self, teacher: torch.Tensor) -> torch.Tensor:
        """The vector the projection should match."""
        return teacher - self.mean if self.loss_kind == "cosine" else teacher

    def forward(self, embeddings: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        """Mean distillation loss over rows that have a teacher vector (0 when none has)."""
        valid = ~torch.isnan(teacher).any(dim=1)
        if not bool(valid.all()):
            if not bool(valid.any()):
                return embeddings.sum() * 0.0
            embeddings, teacher = embeddings[valid], teacher[valid]
        pred = self.proj(F.normalize(embeddings.float(), dim=1))
        target = self.target(teacher.float())
        if self.loss_kind == "cosine":
            return (1.0 - F.cosine_similarity(pred, target, dim=1)).mean()
        return (pred - target).pow(2).sum(dim=1).mean()
