"""Which detected faces are big enough to use: one rule for verification, enrolment, identification and live.

The embedding network sees faces at 112×112; a face whose shorter box side is under :data:`MIN_FACE_SIZE`
pixels is upsampled more than about 3× and its embedding is too unreliable to verify, enroll or name.
Every entry point takes this default from here and lets the user change it (``--min-face-size``).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from facegnet.detection.detector import Face

#: Smallest usable face: shorter side of the detected box, in pixels of the original image.
MIN_FACE_SIZE = 40


def too_small(face: Face, minimum: int = MIN_FACE_SIZE) -> str | None:
    """Why a face is too small to use (one phrase, with its size and the minimum), or None if it is not."""
    if face.size >= minimum:
        return None
    return f"face too small ({face.width:.0f}×{face.height:.0f} px; at least {minimum} px needed)"


__all__ = ["MIN_FACE_SIZE", "too_small"]
