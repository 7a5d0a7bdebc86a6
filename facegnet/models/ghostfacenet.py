"""GhostFaceNets (Alansari et al., IEEE Access 2023): GhostNet as a face embedding network.

Changes from the ImageNet network: 112×112 input, a stem of stride 1 or 2, PReLU in place of ReLU (optional), and
the GDC head of MobileFaceNet instead of pooling + classifier: a depthwise convolution whose kernel covers the
whole final feature map → BatchNorm → (dropout) → 1×1 convolution to the embedding size → BatchNorm. The output is
the raw embedding; callers L2-normalise it.

Input: float tensor (N, 3, 112, 112), RGB scaled as ``(rgb / 255 - 0.5) / 0.5``. Output: (N, embedding_size).
"""
from __future__ import annotations

import math
from typing import Any, cast

import torch
from torch import nn

from facegnet.card import GHOSTFACENET_DEFAULTS, ModelCard, resolve_card, sha256_file
from facegnet.errors import WeightsError
from facegnet.models.ghostnet import (
    LAST_CHANNELS,
    STEM_CHANNELS,
    ConvBnAct,
    GhostNet,
    _make_divisible,
    build_body,
    init_weights,
)
from facegnet.torch_files import load_pt

#: Named face configurations (keyword arguments of :func:`ghostfacenet`), for benchmarks and model cards.
FACE_VARIANTS: dict[str, dict[str, Any]] = {
    "ghostfacenet-w1.0-s2": {"width": 1.0, "stem_stride": 2, "prelu": True, "dfc": False},
    "ghostfacenet-w1.3-s1": {"width": 1.3, "stem_stride": 1, "prelu": True, "dfc": False},
    "ghostfacenet-w0.5-s2": {"width": 0.5, "stem_stride": 2, "prelu": True, "dfc": False},
}

_DEFAULTS = GHOSTFACENET_DEFAULTS


class GhostFaceNet(nn.Module):
    """GhostNet body + GDC head giving an ``embedding_size`` face descriptor (not L2-normalised)."""

    def __init__(
        self,
        width: float = 1.0,
        stem_stride: int = 2,
        prelu: bool = True,
        dfc: bool = False,
        embedding_size: int = 512,
        dropout: float = 0.0,
        input_size: int = 112,
    ) -> None:
        super().__init__()
        if stem_stride not in (1, 2):
            raise ValueError(f"stem_stride must be 1 or 2, not {stem_stride}")
        if dfc:  # the key stays in cards and training configurations, always false
            raise WeightsError("GhostNetV2's DFC attention (dfc=true) is not part of facegnet: it did not pay for its "
                               "time in training (docs/training.md); use dfc=false")
        given = locals()
        self.config = {key: given[key] for key in GHOSTFACENET_DEFAULTS}
        self.embedding_size = embedding_size
        self.input_size = input_size
        act = "prelu" if prelu else "relu"
        stem_chs = _make_divisible(STEM_CHANNELS * width, 4)
        self.stem = ConvBnAct(3, stem_chs, 3, stride=stem_stride, act=act)
        self.blocks, body_chs, strides = build_body(stem_chs, width, act=act)
        self.num_features = _make_divisible(LAST_CHANNELS * width, 4)
        self.conv_last = ConvBnAct(body_chs, self.num_features, 1, act=act)
        # Every stride-2 convolution pads k // 2, so each one maps a side of n pixels to ceil(n / 2).
        self.feature_size = input_size
        for stride in (stem_stride, *strides):
            self.feature_size = math.ceil(self.feature_size / stride)
        # GDC: one weight per channel and position, so the embedding knows where each feature came from.
        self.gdc = nn.Sequential(
            nn.Conv2d(
                self.num_features, self.num_features, self.feature_size, groups=self.num_features, bias=False
            ),
            nn.BatchNorm2d(self.num_features),
        )
        self.dropout = nn.Dropout(dropout)
        self.embedding = nn.Conv2d(self.num_features, embedding_size, 1, bias=False)
        self.bn_embedding = nn.BatchNorm1d(embedding_size)
        init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The final feature map (N, 960·w, S, S), S = ``self.feature_size``."""
        return self.conv_last(self.blocks(self.stem(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dropout(self.gdc(self.forward_features(x)))
        return self.bn_embedding(self.embedding(x).flatten(1))


def _verify_and_load(model: nn.Module, card: ModelCard) -> None:
    """Load the card's weight file into ``model`` after checking its sha256 against the card."""
    path = card.weights_path
    if path is None or not path.is_file():
        raise WeightsError("weight file named by the model card not found", path)
    digest = sha256_file(path)
    if digest != card.sha256:
        raise WeightsError(
            f"sha256 of the weights ({digest[:12]}…) does not match the model card ({card.sha256[:12]}…)", path
        )
    state = load_pt(path, "weight file")
    if not isinstance(state, dict):
        raise WeightsError("weight file does not hold a state_dict", path)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "mismatch"
        raise WeightsError(f"weights do not fit the architecture of the model card ({first})", path) from None


def build_from_card(card: ModelCard) -> nn.Module:
    """The network a model card describes, with its weights loaded (or, for an untrained card, initialised
    with seed 0 so that every build is identical). Returned in training mode, like any new module."""
    builders = {"ghostfacenet": GhostFaceNet, "ghostnet": GhostNet}
    if card.architecture not in builders:
        raise WeightsError(f"unknown architecture {card.architecture!r} in the model card", card.path)
    config = dict(card.config)
    if card.architecture == "ghostfacenet":
        config.setdefault("embedding_size", card.embedding_size)
        config.setdefault("input_size", card.input_size)
    try:
        if card.trained:
            model = builders[card.architecture](**config)
        else:
            # fork_rng leaves the caller's random state untouched.
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                model = builders[card.architecture](**config)
    except (TypeError, ValueError) as exc:
        raise WeightsError(f"bad architecture config in the model card: {exc}", card.path) from None
    if card.trained:
        _verify_and_load(model, card)
    return model


def ghostfacenet(
    width: float = 1.0,
    stem_stride: int = 2,
    prelu: bool = True,
    dfc: bool = False,
    embedding_size: int = 512,
    dropout: float = 0.0,
    input_size: int = 112,
    pretrained: bool = False,
) -> GhostFaceNet:
    """A GhostFaceNet face embedding network (see :data:`FACE_VARIANTS` for named configurations).

    With ``pretrained=True`` the architecture comes from the shipped default model card and its weights are
    loaded (sha256 checked); arguments changed from their defaults must agree with that card. Raises
    :class:`~facegnet.errors.WeightsError` when no trained weights ship.
    """
    given = locals()
    requested = {key: given[key] for key in GHOSTFACENET_DEFAULTS}
    if not pretrained:
        return GhostFaceNet(**requested)
    card = resolve_card(None)
    if not card.trained:
        raise WeightsError(
            "no trained face weights ship with this version of facegnet; train them with `facegnet train` "
            "and load them with build_from_card(resolve_card(PATH)), or use pretrained=False for an untrained network"
        )
    if card.architecture != "ghostfacenet":
        raise WeightsError(f"the shipped model card describes {card.architecture!r}, not ghostfacenet", card.path)
    shipped = {**_DEFAULTS, "embedding_size": card.embedding_size, "input_size": card.input_size, **card.config}
    # Dropout only acts in training, so it may differ from the card; everything else shapes the weights.
    clashes = [k for k, v in requested.items() if k != "dropout" and v != _DEFAULTS[k] and v != shipped.get(k)]
    if clashes:
        wanted = ", ".join(f"{k}={shipped.get(k)!r}" for k in clashes)
        raise WeightsError(f"the shipped weights were trained with {wanted}", card.path)
    model = cast(GhostFaceNet, build_from_card(card))
    if dropout != _DEFAULTS["dropout"]:
        model.dropout.p = dropout
    return model
