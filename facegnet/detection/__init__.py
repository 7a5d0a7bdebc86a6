"""Detection: MTCNN finds faces and five landmarks; which faces are big enough; an optional detection cache.

:class:`Detector` is the entry point (also importable as ``facegnet.Detector``). Loaded on first use, so that
importing the package's light modules (the cache, the size rule) does not load PyTorch.
"""
from __future__ import annotations

__all__ = ["Detector", "Face"]


def __getattr__(name: str):
    if name in __all__:
        from facegnet.detection import detector

        return getattr(detector, name)
    raise AttributeError(f"module 'facegnet.detection' has no attribute {name!r}")
