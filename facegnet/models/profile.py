"""Model size figures: parameters and multiply-accumulates (MACs) of a forward pass.

MACs count the convolutions and linear layers only (what papers report as "FLOPs"): a convolution costs
``output elements × in_channels / groups × kernel_h × kernel_w``, a linear layer ``in_features × out_features``
per row. BatchNorm, activations, pooling and element-wise products are left out.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters of ``model`` (all of them, or only those that require gradients)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def _input_shape(input_size: int | Sequence[int], in_chans: int = 3) -> tuple[int, int, int, int]:
    """(1, C, H, W) from a side length, (H, W) or (C, H, W)."""
    if isinstance(input_size, int):
        return (1, in_chans, input_size, input_size)
    dims = tuple(int(d) for d in input_size)
    if len(dims) == 2:
        return (1, in_chans, *dims)
    if len(dims) == 3:
        return (1, *dims)
    raise ValueError(f"input_size must be N, (H, W) or (C, H, W), not {input_size!r}")


def _profile(model: nn.Module, input_size: int | Sequence[int]) -> tuple[int, tuple[int, ...]]:
    """MACs of one image and the output shape, from one eval-mode forward pass of zeros."""
    total = 0

    def conv_hook(module: nn.Conv2d, _inputs: Any, output: torch.Tensor) -> None:
        nonlocal total
        kh, kw = module.kernel_size
        total += output.numel() // output.shape[0] * (module.in_channels // module.groups) * kh * kw

    def linear_hook(module: nn.Linear, _inputs: Any, output: torch.Tensor) -> None:
        nonlocal total
        rows = output.numel() // output.shape[0] // module.out_features
        total += rows * module.in_features * module.out_features

    handles = []
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            handles.append(module.register_forward_hook(conv_hook))
        elif isinstance(module, nn.Linear):
            handles.append(module.register_forward_hook(linear_hook))
    was_training = model.training
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    try:
        model.eval()  # BatchNorm1d refuses a batch of one in training mode
        with torch.inference_mode():
            output = model(torch.zeros(_input_shape(input_size), device=device))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return total, tuple(output.shape)


def count_macs(model: nn.Module, input_size: int | Sequence[int]) -> int:
    """Multiply-accumulates of Conv2d and Linear layers for one image of ``input_size`` (side, (H, W) or
    (C, H, W))."""
    return _profile(model, input_size)[0]


def summarize(model: nn.Module, input_size: int | Sequence[int]) -> dict[str, Any]:
    """Parameters, MACs (also in millions) and output shape of ``model`` for one image of ``input_size``."""
    macs, output_shape = _profile(model, input_size)
    params = count_parameters(model)
    return {
        "input_shape": list(_input_shape(input_size)),
        "output_shape": list(output_shape),
        "params": params,
        "params_m": round(params / 1e6, 3),
        "macs": macs,
        "macs_m": round(macs / 1e6, 1),
    }
