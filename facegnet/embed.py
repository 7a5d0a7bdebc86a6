"""Embedding: aligned 112×112 crops → L2-normalised embeddings with a GhostNet face model (PyTorch).

The model card gives the architecture, the normalisation and the weights; the network is built once per
:class:`Embedder` and run under ``torch.inference_mode`` in batches, optionally with the horizontal flip
added (test-time augmentation). Normalisation and flip live in :mod:`facegnet.preprocess`, shared with the
ONNX Runtime back-end, so both compute the same procedure.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from facegnet.card import ModelCard, resolve_card
from facegnet.preprocess import crop_batch, embed_normalised, normalise


class Embedder:
    """Turns aligned face crops into unit-length embeddings.

    Args:
        card: the model card of the weights (default: the shipped model, or the untrained fallback).
        model: an already built network to use instead of the card's weights (e.g. during training).
        flip: add the embedding of the mirrored crop (twice the compute; see the card's thresholds per procedure).
        batch_size: crops per forward pass.
        device: torch device.
    """

    #: Numerics of this back-end, one part of :attr:`facegnet.recognizer.FaceRecognizer.procedure`.
    numerics = "fp32"

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

    @property
    def dim(self) -> int:
        return int(self.card.embedding_size)

    def preprocess(self, crops: np.ndarray) -> torch.Tensor:
        """uint8 (N, H, W, 3) RGB crops → normalised float (N, 3, H, W) tensor on the device."""
        return torch.from_numpy(normalise(crops, self.card.mean, self.card.std)).to(self.device)

    def __call__(self, crops: np.ndarray) -> np.ndarray:
        """Embed (N, S, S, 3) uint8 crops (S = the card's input size): float32 (N, D) unit vectors."""
        crops = crop_batch(crops, self.card.input_size)
        out = np.empty((len(crops), self.dim), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(crops), self.batch_size):
                batch = self.preprocess(crops[start : start + self.batch_size])
                features = embed_normalised(self.model, batch, self.flip, together=False)
                out[start : start + len(batch)] = features.cpu().numpy()
        return out
