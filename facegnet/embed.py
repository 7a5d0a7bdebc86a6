"""Embedding: aligned 112×112 crops → L2-normalised embeddings with a GhostNet face model.

The model card gives the architecture, the normalisation and the weights; the network is built once per
:class:`Embedder` and run under ``torch.inference_mode`` in batches, optionally with the horizontal flip
added (test-time augmentation: the embedding of the crop plus that of its mirror image).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from facegnet.card import ModelCard, resolve_card


def as_crop_batch(crops: np.ndarray, size: int) -> np.ndarray:
    """Check aligned crops: one (S, S, 3) crop or a (N, S, S, 3) batch, returned as the batch."""
    crops = np.asarray(crops)
    if crops.ndim == 3:
        crops = crops[None]
    if crops.ndim != 4 or crops.shape[1:] != (size, size, 3):
        raise ValueError(f"expected aligned crops of shape (N, {size}, {size}, 3), got {crops.shape}")
    return crops


class Embedder:
    """Turns aligned face crops into unit-length embeddings.

    Args:
        card: the model card of the weights (default: the shipped model, or the untrained fallback).
        model: an already built network to use instead of the card's weights (e.g. during training).
        flip: add the embedding of the mirrored crop (slightly more accurate, twice the compute).
        batch_size: crops per forward pass.
        device: torch device.
    """

    def __init__(
        self,
        card: ModelCard | None = None,
        *,
        model: nn.Module | None = None,
        flip: bool = True,
        batch_size: int = 64,
        device: str | torch.device = "cpu",
    ) -> None:
        self.card = card if card is not None else resolve_card(None)
        self.flip = flip
        self.batch_size = max(1, int(batch_size))
        self.device = torch.device(device)
        if model is None:
            from facegnet.models import build_from_card

            model = build_from_card(self.card)
        self.model = model.to(self.device).eval()
        mean = torch.tensor(self.card.mean, dtype=torch.float32).view(1, 3, 1, 1) * 255.0
        std = torch.tensor(self.card.std, dtype=torch.float32).view(1, 3, 1, 1) * 255.0
        self._mean, self._std = mean.to(self.device), std.to(self.device)

    @property
    def dim(self) -> int:
        return int(self.card.embedding_size)

    def preprocess(self, crops: np.ndarray) -> torch.Tensor:
        """uint8 (N, H, W, 3) RGB crops → normalised float (N, 3, H, W) tensor."""
        tensor = torch.from_numpy(np.ascontiguousarray(crops)).to(self.device)
        tensor = tensor.permute(0, 3, 1, 2).float()
        return (tensor - self._mean) / self._std

    def __call__(self, crops: np.ndarray) -> np.ndarray:
        """Embed (N, S, S, 3) uint8 crops (S = the card's input size): float32 (N, D) unit vectors."""
        crops = as_crop_batch(crops, self.card.input_size)
        out = np.empty((len(crops), self.dim), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(crops), self.batch_size):
                batch = self.preprocess(crops[start : start + self.batch_size])
                features = self.model(batch)
                if self.flip:
                    features = features + self.model(torch.flip(batch, dims=[3]))
                features = nn.functional.normalize(features.float(), dim=1)
                out[start : start + len(batch)] = features.cpu().numpy()
        return out
