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

#: Public names → the module that defines them. Heavy modules (torch, MTCNN) load only when a name is used, so
#: ``import facegnet`` and ``facegnet --help`` stay quick.
_LAZY = {
    "FaceRecognizer": "facegnet.recognizer",
    "Gallery": "facegnet.gallery",
    "Detector": "facegnet.detection.detector",
    "Face": "facegnet.detection.detector",
    "Embedder": "facegnet.embed",
    "OnnxEmbedder": "facegnet.deploy.onnx_embedder",
    "align_face": "facegnet.align",
    "ModelCard": "facegnet.card",
}


def __getattr__(name: str):
    import importlib

    if name == "models":
        return importlib.import_module("facegnet.models")
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'facegnet' has no attribute {name!r}")


__all__ = [
    "FaceRecognizer",
    "Gallery",
    "Detector",
    "Face",
    "Embedder",
    "OnnxEmbedder",
    "align_face",
    "ModelCard",
    "load_image",
    "models",
    "FacegnetError",
    "ImageError",
    "NoFaceError",
    "WeightsError",
    "GalleryError",
]
