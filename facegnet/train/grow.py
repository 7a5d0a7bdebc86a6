"""Grow a trained plain GhostFaceNet into its GhostNetV2 (DFC attention) variant without changing its function.

The V2 network is the plain one plus a DFC attention branch on the first Ghost module of most bottlenecks:
``out = ghost(x) * sigmoid(dfc(x))``. A gate of exactly 1 would need an infinite sigmoid input (and would pass no
gradient), so the branch starts at a gate of exactly 0.5 (its last BatchNorm's scale and shift at zero, like a
zero-initialised residual) and the gated Ghost module is made to output twice its old value. Its two
Conv → BatchNorm → PReLU/ReLU layers are positively homogeneous in their BatchNorm's scale and shift, so doubling
those (and halving the cheap depthwise layer's kernel, which now sees a doubled input) doubles the output in both
training and eval mode. The product is then exactly the old network's, while the attention gets a
gradient from step 1 and can learn to move away from 0.5 (up to an effective ×2).
"""
from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from facegnet.models.ghostnet import GhostModule

__all__ = ["grow_dfc"]


@torch.no_grad()
def _double_output(layer: nn.Sequential, input_scale: float = 1.0) -> None:
    """Make a Conv → BatchNorm → act layer (act positively homogeneous) output twice what it did, when its input is
    now ``input_scale`` times what it was: the convolution undoes the input's scale (so BatchNorm sees what it
    saw, batch statistics, running statistics and epsilon alike) and BatchNorm's scale and shift double."""
    conv, bn = layer[0], layer[1]
    assert isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d), "ConvBnAct is conv, BatchNorm, act"
    conv.weight.div_(input_scale)
    bn.weight.mul_(2.0)
    bn.bias.mul_(2.0)


@torch.no_grad()
def grow_dfc(net: nn.Module, state: Mapping[str, torch.Tensor]) -> int:
    """Load a plain network's ``state`` into ``net`` (built with ``dfc=True``) so that ``net`` computes the same
    embeddings; returns how many Ghost modules got an attention branch.

    Raises ``RuntimeError`` when ``state`` misses anything but the attention branches or has keys ``net`` lacks.
    """
    missing, unexpected = net.load_state_dict(state, strict=False)
    stray = [k for k in missing if ".dfc." not in k]
    if stray or unexpected:
        raise RuntimeError(f"missing keys {stray[:3]}, unexpected keys {list(unexpected)[:3]}")
    grown = 0
    for module in net.modules():
        if not isinstance(module, GhostModule) or module.dfc is None:
            continue
        last_bn = module.dfc.vertical[1]
        last_bn.weight.zero_()
        last_bn.bias.zero_()  # sigmoid(0) = 0.5 whatever the input
        _double_output(module.primary_conv)
        _double_output(module.cheap_operation, input_scale=2.0)  # its input is the doubled primary output
        grown += 1
    return grown
