"""How an aligned crop becomes network input, and how flip test-time augmentation is done: one place for both.

Every embedding path (PyTorch, ONNX Runtime, export calibration, training evaluation) calls these functions, so
the numbers a threshold was calibrated on are the numbers the API computes. Works on numpy arrays and on torch
tensors alike, and never imports torch (the ONNX Runtime back-end must run without it).

- :func:`normalise`: uint8 (N, H, W, 3) RGB → float32 (N, 3, H, W), ``(rgb / 255 - mean) / std``.
- :func:`embed_normalised`: run a network on a normalised batch, with the mirrored batch added when ``flip``
  (one pass over twice the batch), then L2-normalise: the embedding procedure of the model card.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

#: The default normalisation of the GhostFaceNet cards: RGB in [0, 1] mapped to [-1, 1].
DEFAULT_MEAN = (0.5, 0.5, 0.5)
DEFAULT_STD = (0.5, 0.5, 0.5)


def _is_torch(x: Any) -> bool:
    """A torch tensor, recognised without importing torch."""
    return type(x).__module__.startswith("torch")


def crop_batch(crops: Any, size: int) -> np.ndarray:
    """Check aligned crops: one (S, S, 3) crop or a (N, S, S, 3) batch, returned as the batch (numpy)."""
    crops = np.asarray(crops)
    if crops.ndim == 3:
        crops = crops[None]
    if crops.ndim != 4 or crops.shape[1:] != (size, size, 3):
        raise ValueError(f"expected aligned crops of shape (N, {size}, {size}, 3), got {crops.shape}")
    return crops


def normalise(crops: Any, mean: Sequence[float] = DEFAULT_MEAN, std: Sequence[float] = DEFAULT_STD) -> Any:
    """uint8 (N, H, W, 3) RGB crops → float32 (N, 3, H, W), ``(rgb / 255 - mean) / std`` per channel.

    A numpy array gives a contiguous numpy array; a torch tensor gives a tensor on its device.
    """
    scale_mean = [255.0 * float(m) for m in mean]
    scale_std = [255.0 * float(s) for s in std]
    if _is_torch(crops):
        x = crops.permute(0, 3, 1, 2).float()
        m = x.new_tensor(scale_mean).view(1, 3, 1, 1)
        s = x.new_tensor(scale_std).view(1, 3, 1, 1)
        return (x - m) / s
    x = np.asarray(crops).transpose(0, 3, 1, 2).astype(np.float32)
    m = np.asarray(scale_mean, dtype=np.float32).reshape(1, 3, 1, 1)
    s = np.asarray(scale_std, dtype=np.float32).reshape(1, 3, 1, 1)
    return np.ascontiguousarray((x - m) / s)


def mirror(batch: Any) -> Any:
    """Horizontal mirror image of a (N, C, H, W) batch (numpy or torch)."""
    if _is_torch(batch):
        return batch.flip(-1)
    return np.ascontiguousarray(batch[..., ::-1])


def l2_normalise(features: Any, eps: float = 1e-12) -> Any:
    """Rows scaled to unit length (rows of zeros stay zero), numpy or torch."""
    if _is_torch(features):
        return features / features.norm(dim=1, keepdim=True).clamp_min(eps)
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    return features / np.maximum(norms, eps)


def embed_normalised(run: Callable[[Any], Any], batch: Any, flip: bool, together: bool = True) -> Any:
    """Unit embeddings of a normalised batch: ``run(batch)``, plus ``run(mirror(batch))`` when ``flip``.

    The raw embeddings of a crop and of its mirror image are summed before normalising (the procedure the cards'
    thresholds were calibrated with). ``together``: run crops and mirrors as one batch of twice the size (one
    call: best for ONNX Runtime), else as two calls (PyTorch, whose results then do not depend on the batch).
    """
    n = len(batch)
    if flip and together:
        if _is_torch(batch):
            import torch

            both = torch.cat([batch, mirror(batch)])
        else:
            both = np.concatenate([batch, mirror(batch)])
        features = run(both)
        features = features[:n] + features[n:]
    elif flip:
        features = run(batch) + run(mirror(batch))
    else:
        features = run(batch)
    if _is_torch(features):
        features = features.float()
    else:
        features = np.asarray(features, dtype=np.float32)
    return l2_normalise(features)
