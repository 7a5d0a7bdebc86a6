"""Deployment: the embedding network exported to ONNX (fp32, int8) or TorchScript, and run by ONNX Runtime.

:class:`OnnxEmbedder` (also importable as ``facegnet.OnnxEmbedder``) runs an export without PyTorch.
"""
from __future__ import annotations

__all__ = ["OnnxEmbedder"]


def __getattr__(name: str):
    if name == "OnnxEmbedder":
        from facegnet.deploy.onnx_embedder import OnnxEmbedder

        return OnnxEmbedder
    raise AttributeError(f"module 'facegnet.deploy' has no attribute {name!r}")
