"""GhostNet (Han et al., CVPR 2020, "GhostNet: More Features from Cheap Operations").

A Ghost module makes half of its output channels with an ordinary 1×1 convolution and the other half with a cheap
3×3 depthwise convolution applied to the first half. Ghost bottlenecks (two Ghost modules around an optional
depthwise stride convolution and squeeze-excitation) form the body; the layer table below is the paper's Table 1,
kept as data so that the face network (:mod:`facegnet.models.ghostfacenet`) reuses it unchanged.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from facegnet.errors import WeightsError


class BlockConfig(NamedTuple):
    """One Ghost bottleneck of the layer table."""

    kernel: int  # depthwise kernel of the stride convolution and of the shortcut
    expansion: int  # hidden (expanded) channels at width 1.0
    out: int  # output channels at width 1.0
    se_ratio: float  # squeeze-excitation reduction ratio; 0 means no SE
    stride: int


# The paper's Table 1, grouped by stage (the grouping only matters for naming; timm groups the same way).
GHOSTNET_TABLE: tuple[tuple[BlockConfig, ...], ...] = (
    (BlockConfig(3, 16, 16, 0.0, 1),),
    (BlockConfig(3, 48, 24, 0.0, 2),),
    (BlockConfig(3, 72, 24, 0.0, 1),),
    (BlockConfig(5, 72, 40, 0.25, 2),),
    (BlockConfig(5, 120, 40, 0.25, 1),),
    (BlockConfig(3, 240, 80, 0.0, 2),),
    (
        BlockConfig(3, 200, 80, 0.0, 1),
        BlockConfig(3, 184, 80, 0.0, 1),
        BlockConfig(3, 184, 80, 0.0, 1),
        BlockConfig(3, 480, 112, 0.25, 1),
        BlockConfig(3, 672, 112, 0.25, 1),
    ),
    (BlockConfig(5, 672, 160, 0.25, 2),),
    (
        BlockConfig(5, 960, 160, 0.0, 1),
        BlockConfig(5, 960, 160, 0.25, 1),
        BlockConfig(5, 960, 160, 0.0, 1),
        BlockConfig(5, 960, 160, 0.25, 1),
    ),
)
STEM_CHANNELS = 16
LAST_CHANNELS = 960  # the 1×1 convolution after the bottlenecks
HEAD_CHANNELS = 1280  # the ImageNet classifier's hidden layer (not scaled by width)


def _make_divisible(value: float, divisor: int = 4, min_value: int | None = None) -> int:
    """Round ``value`` to the nearest multiple of ``divisor``, never going more than 10% below it."""
    min_value = min_value or divisor
    new_value = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if new_value < 0.9 * value:  # rounding down must not lose more than 10% of the channels
        new_value += divisor
    return new_value


def make_activation(kind: str, channels: int) -> nn.Module:
    """The activation ``kind`` ("relu", "prelu" or "none") for a tensor with ``channels`` channels."""
    if kind == "relu":
        return nn.ReLU(inplace=True)
    if kind == "prelu":
        return nn.PReLU(channels)  # one slope per channel, as in GhostFaceNets
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown activation {kind!r} (expected 'relu', 'prelu' or 'none')")


class ConvBnAct(nn.Sequential):
    """Convolution (no bias) → BatchNorm → activation, padded to keep the size at stride 1."""

    def __init__(
        self, in_chs: int, out_chs: int, kernel: int = 1, stride: int = 1, groups: int = 1, act: str = "relu"
    ) -> None:
        super().__init__(
            nn.Conv2d(in_chs, out_chs, kernel, stride, kernel // 2, groups=groups, bias=False),
            nn.BatchNorm2d(out_chs),
            make_activation(act, out_chs),
        )


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation with a hard-sigmoid gate; the reduced width is a multiple of 4."""

    def __init__(self, channels: int, se_ratio: float = 0.25) -> None:
        super().__init__()
        reduced = _make_divisible(channels * se_ratio, 4)
        self.conv_reduce = nn.Conv2d(channels, reduced, 1, bias=True)
        self.act = nn.ReLU(inplace=True)
        self.conv_expand = nn.Conv2d(reduced, channels, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = x.mean((2, 3), keepdim=True)
        scale = self.conv_expand(self.act(self.conv_reduce(scale)))
        return x * F.hardsigmoid(scale)


class GhostModule(nn.Module):
    """Ghost module: a 1×1 primary convolution makes ``ceil(out / ratio)`` intrinsic feature maps, a cheap 3×3
    depthwise convolution on them makes the rest ("ghosts"); both are concatenated and cut to ``out_chs``."""

    def __init__(
        self, in_chs: int, out_chs: int, ratio: int = 2, dw_kernel: int = 3, act: str = "relu"
    ) -> None:
        super().__init__()
        self.out_chs = out_chs
        init_chs = math.ceil(out_chs / ratio)
        cheap_chs = init_chs * (ratio - 1)
        self.primary_conv = ConvBnAct(in_chs, init_chs, 1, act=act)
        self.cheap_operation = ConvBnAct(init_chs, cheap_chs, dw_kernel, groups=init_chs, act=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        intrinsic = self.primary_conv(x)
        return torch.cat([intrinsic, self.cheap_operation(intrinsic)], dim=1)[:, : self.out_chs]


class GhostBottleneck(nn.Module):
    """Ghost bottleneck: Ghost module (expand, with activation) → depthwise stride conv (stride 2 only) → optional
    SE → Ghost module (project, linear) + shortcut (identity, or depthwise conv + 1×1 conv when the shape changes)."""

    def __init__(
        self,
        in_chs: int,
        mid_chs: int,
        out_chs: int,
        kernel: int = 3,
        stride: int = 1,
        se_ratio: float = 0.0,
        act: str = "relu",
    ) -> None:
        super().__init__()
        self.ghost1 = GhostModule(in_chs, mid_chs, act=act)
        self.conv_dw = (
            nn.Sequential(
                nn.Conv2d(mid_chs, mid_chs, kernel, stride, (kernel - 1) // 2, groups=mid_chs, bias=False),
                nn.BatchNorm2d(mid_chs),
            )
            if stride > 1
            else None
        )
        self.se = SqueezeExcite(mid_chs, se_ratio) if se_ratio > 0 else None
        self.ghost2 = GhostModule(mid_chs, out_chs, act="none")
        if in_chs == out_chs and stride == 1:
            self.shortcut: nn.Module = nn.Identity()
        else:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_chs, in_chs, kernel, stride, (kernel - 1) // 2, groups=in_chs, bias=False),
                nn.BatchNorm2d(in_chs),
                nn.Conv2d(in_chs, out_chs, 1, bias=False),
                nn.BatchNorm2d(out_chs),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.ghost1(x)
        if self.conv_dw is not None:
            out = self.conv_dw(out)
        if self.se is not None:
            out = self.se(out)
        return self.ghost2(out) + self.shortcut(x)


def build_body(
    in_chs: int,
    width: float = 1.0,
    table: Sequence[Sequence[BlockConfig]] = GHOSTNET_TABLE,
    act: str = "relu",
) -> tuple[nn.Sequential, int, list[int]]:
    """The Ghost bottleneck stages of ``table`` scaled by ``width``.

    Returns the stages, their output channels and the stride of every bottleneck (in order), so that callers can
    work out the size of the final feature map.
    """
    stages: list[nn.Module] = []
    strides: list[int] = []
    for stage in table:
        blocks: list[nn.Module] = []
        for cfg in stage:
            out_chs = _make_divisible(cfg.out * width, 4)
            mid_chs = _make_divisible(cfg.expansion * width, 4)
            blocks.append(GhostBottleneck(in_chs, mid_chs, out_chs, cfg.kernel, cfg.stride, cfg.se_ratio, act))
            strides.append(cfg.stride)
            in_chs = out_chs
        stages.append(nn.Sequential(*blocks))
    return nn.Sequential(*stages), in_chs, strides


def init_weights(model: nn.Module) -> None:
    """Kaiming-normal convolutions, unit BatchNorm, small-normal linear layers (as the reference code)."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, (nn.BatchNorm2d, nn.BatchNorm1d)):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, 0.0, 0.01)
            nn.init.zeros_(module.bias)


class GhostNet(nn.Module):
    """The ImageNet classifier of the GhostNet paper: stem → Ghost bottlenecks → 1×1 conv to 960·w → global
    pool → 1×1 conv to 1280 + ReLU → dropout → linear classifier."""

    def __init__(
        self,
        width: float = 1.0,
        num_classes: int = 1000,
        dropout: float = 0.2,
        in_chans: int = 3,
        table: Sequence[Sequence[BlockConfig]] = GHOSTNET_TABLE,
    ) -> None:
        super().__init__()
        self.width = width
        self.num_classes = num_classes
        stem_chs = _make_divisible(STEM_CHANNELS * width, 4)
        self.stem = ConvBnAct(in_chans, stem_chs, 3, stride=2)
        self.blocks, body_chs, _ = build_body(stem_chs, width, table)
        self.num_features = _make_divisible(LAST_CHANNELS * width, 4)
        self.conv_last = ConvBnAct(body_chs, self.num_features, 1)
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.conv_head = nn.Conv2d(self.num_features, HEAD_CHANNELS, 1, bias=True)
        self.act_head = nn.ReLU(inplace=True)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(HEAD_CHANNELS, num_classes) if num_classes > 0 else nn.Identity()
        init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The final feature map (N, 960·w, H/32, W/32)."""
        return self.conv_last(self.blocks(self.stem(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act_head(self.conv_head(self.global_pool(self.forward_features(x))))
        return self.classifier(self.dropout(x.flatten(1)))


def ghostnet(
    width: float = 1.0, num_classes: int = 1000, dropout: float = 0.2, pretrained: bool = False, **kwargs
) -> GhostNet:
    """The ImageNet GhostNet with width multiplier ``width`` (0.5, 1.0 and 1.3 in the paper).

    ``kwargs`` go to :class:`GhostNet` (``in_chans``, ``table``). No ImageNet weights ship with facegnet, so
    ``pretrained=True`` raises :class:`~facegnet.errors.WeightsError`.
    """
    if pretrained:
        raise WeightsError(
            "no ImageNet GhostNet weights ship with facegnet; for trained face weights use "
            "facegnet.models.ghostfacenet(pretrained=True)"
        )
    return GhostNet(width=width, num_classes=num_classes, dropout=dropout, **kwargs)
