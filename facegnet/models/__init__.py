"""The networks: GhostNet (ImageNet configuration of the paper) and GhostFaceNet (the face embedding network).

Builders follow torchvision: ``ghostnet(width=1.0)``, ``ghostfacenet(pretrained=True)``. Nothing is built at
import time.
"""
from __future__ import annotations

from facegnet.models.ghostfacenet import FACE_VARIANTS, GhostFaceNet, build_from_card, ghostfacenet
from facegnet.models.ghostnet import GhostNet, ghostnet
from facegnet.models.profile import count_macs, count_parameters, summarize

__all__ = [
    "FACE_VARIANTS",
    "GhostFaceNet",
    "GhostNet",
    "build_from_card",
    "count_macs",
    "count_parameters",
    "ghostfacenet",
    "ghostnet",
    "summarize",
]
