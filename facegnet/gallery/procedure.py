"""The embedding procedure a gallery was made with, and the one rule that refuses mixing procedures.

Embeddings are comparable only when made the same way: the same weights, with or without flip test-time
augmentation, in the same numerics (fp32 — PyTorch and ONNX Runtime agree — or int8). A gallery records that
*procedure* (``meta.procedure``, named ``<weights sha256>:<flip|noflip>:<fp32|int8>`` as
``FaceRecognizer.procedure`` names it) and refuses to be probed or enrolled with another one until
``facegnet gallery rebuild`` re-embeds it. Galleries made before procedures were recorded hold only the
weights' fingerprint: they were made with flip in PyTorch fp32, the only procedure of that time.
"""
from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from facegnet.recognizer import FaceRecognizer

#: Numerics of each back-end (PyTorch and ONNX Runtime fp32 embeddings agree to cosine 0.9999).
_NUMERICS = {"torch": "fp32", "onnx": "fp32", "onnx-int8": "int8"}


def compose(fingerprint: str, flip: bool = True, numerics: str = "fp32") -> str:
    """A procedure named from its parts: ``<weights sha256>:<flip|noflip>:<numerics>``."""
    return f"{fingerprint}:{'flip' if flip else 'noflip'}:{numerics}"


def procedure_of(recognizer: FaceRecognizer) -> str:
    """The embedding procedure of a recogniser (the one place that asks it)."""
    named = getattr(recognizer, "procedure", None)
    if isinstance(named, str) and named:
        return named
    # Recognisers without the property: composed the same way from the options they keep.
    flip = getattr(recognizer, "flip", None)
    if flip is None:
        flip = getattr(recognizer, "_embedder_options", {}).get("flip", True)
    return compose(recognizer.fingerprint, bool(flip), _NUMERICS.get(getattr(recognizer, "backend", "torch"), "fp32"))


def recorded_procedure(procedure: str | None, fingerprint: str | None) -> str:
    """What a gallery's meta says it was made with; only a fingerprint means the procedure of that time."""
    return procedure or compose(fingerprint or "?", flip=True, numerics="fp32")


def short(procedure: str) -> str:
    """A procedure for messages: sha256 digests cut to 12 characters."""
    return re.sub(r"\b([0-9a-f]{12})[0-9a-f]{52}\b", r"\1…", procedure)


__all__ = ["compose", "procedure_of", "recorded_procedure", "short"]
