"""facegnet: face detection (MTCNN), ArcFace alignment, GhostNet embeddings, verification and FAISS galleries.

The public API::

    from facegnet import FaceRecognizer, load_image
    rec = FaceRecognizer()
    rec.verify("a.jpg", "b.jpg")
"""
from __future__ import annotations

__version__ = "0.1.0"

from facegnet.errors import FacegnetError, GalleryError, ImageError, NoFaceError, WeightsError  # noqa: E402
from facegnet.io import load_image  # noqa: E402


def __getattr__(name: str):
    # Heavy modules (torch, MTCNN) load only when used, so `import facegnet` and `facegnet --help` stay quick.
    if name == "FaceRecognizer":
        from facegnet.recognizer import FaceRecognizer

        return FaceRecognizer
    if name == "Gallery":
        from facegnet.gallery import Gallery

        return Gallery
    if name == "models":
        import importlib

        return importlib.import_module("facegnet.models")
    raise AttributeError(f"module 'facegnet' has no attribute {name!r}")


__all__ = [
    "FaceRecognizer",
    "Gallery",
    "load_image",
    "models",
    "FacegnetError",
    "ImageError",
    "NoFaceError",
    "WeightsError",
    "GalleryError",
]
