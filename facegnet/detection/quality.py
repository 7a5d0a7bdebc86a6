"""Which detected faces are big enough to use: one rule for verification, enrolment, identification and live.

The embedding network sees faces at 112×112; a face whose shorter box side is under :data:`MIN_FACE_SIZE`
pixels is upsampled more than about 3× and its embedding is too unreliable to verify, enroll or name.
Every entry point takes this default from here and lets the user change it (``--min-face-size``).
A photo cut so close to the face that much of its aligned crop lies outside it (:data:`TIGHT_CROP`) is used,
with a warning: :func:`cut_tight`. A photo lying on its side without an EXIF orientation is refused by
verification and enrolment rather than used by a false face MTCNN finds in it: :func:`on_its_side`.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:
    from facegnet.detection.detector import Face


class Measured(Protocol):
    """A face that knows the share of its aligned crop outside its photo: :class:`~facegnet.Face`, or
    clustering's :class:`~facegnet.cluster.FoundFace`."""

    @property
    def outside(self) -> float | None: ...

#: Smallest usable face: shorter side of the detected box, in pixels of the original image.
MIN_FACE_SIZE = 40


#: Share of a face's aligned crop outside its photo (:attr:`Face.outside`) above which the photo counts as cut
#: too close to the face: the black the warp fills in is shared by every photo cut so, which raises their scores
#: with each other, strangers' too. ``benchmarks/tight_crop_level.py`` (``benchmarks/results/tight_crop_level.md``,
#: dev faces cut to a share): the impostor quantiles at p = 1e-2 and 1e-3 of pairs both cut rise +0.008 and +0.016
#: at 0.20, past the 0.02 margin from 0.25 on, +0.051 and +0.061 at 0.50 (a tight face against whole ones: under
#: 0.01 at any share). Whole LFW photos leave 0; cut to MTCNN's box, a median 0.51; to the box plus 10%, 0.22.
TIGHT_CROP = 0.2


#: A photo whose largest face scores under this is looked at turned 90° each way (:func:`on_its_side`); turned,
#: it lies on its side when it holds a face scoring at least :data:`SIDEWAYS_FACE`. 400 LFW photos turned 90°
#: (``benchmarks/sideways_photos.py``, ``benchmarks/results/sideways_photos.md``): 270 hold no face, 126 a false
#: one this rule refuses, 4 one it lets through (one scoring 0.963, three 0.994–0.996); of 13,233 upright LFW
#: photos, 95 have a largest face scoring under 0.99 and none is refused.
SIDEWAYS_CHECK = 0.99
SIDEWAYS_FACE = 0.995


def on_its_side(array: np.ndarray, face: Face, detect: Callable[[np.ndarray], Sequence[Face]],
                minimum: int = MIN_FACE_SIZE) -> str | None:
    """Why a photo is refused as lying on its side (the whole reason, as every caller reports it), or None: its
    largest ``face`` scores under :data:`SIDEWAYS_CHECK`, and turned 90° one way or the other its largest face of
    ``minimum`` px (``detect`` gives faces largest first) scores :data:`SIDEWAYS_FACE` or more. Two more
    detections, for doubtful faces only."""
    if face.score >= SIDEWAYS_CHECK:
        return None
    for turns, way in ((1, "anticlockwise"), (3, "clockwise")):
        found = [f for f in detect(np.ascontiguousarray(np.rot90(array, turns))) if f.size >= minimum]
        if found and found[0].score >= SIDEWAYS_FACE:
            return (f"no upright face found: the photo lies on its side (its face scores {face.score:.2f} as it is, "
                    f"{found[0].score:.3f} turned 90° {way}): turn it upright, or give it an EXIF orientation")
    return None


def too_small(face: Face, minimum: int = MIN_FACE_SIZE) -> str | None:
    """Why a face is too small to use (one phrase, with its size and the minimum), or None if it is not."""
    if face.size >= minimum:
        return None
    return f"face too small ({face.width:.0f}×{face.height:.0f} px; at least {minimum} px needed)"


def cut_tight(face: Measured, level: float = TIGHT_CROP) -> str | None:
    """Why a face's photo is cut too close (one phrase, with its share outside the photo), or None if it is not
    (or was not measured). The face is still used: its scores with faces cut alike run high, strangers' too."""
    if face.outside is None or face.outside <= level:
        return None
    return (f"cut tight ({face.outside:.0%} of its aligned crop lies outside the photo); scores between photos "
            "cut so run high: enrol and search whole photos")


def tight_notes(faces: Sequence[Measured | None], level: float = TIGHT_CROP) -> list[str]:
    """A phrase for each face of a photo cut tight, numbered as listed (``"face 1 is cut tight (…)…"``)."""
    return [f"face {n} is {why}" for n, face in enumerate(faces, 1)
            if face is not None and (why := cut_tight(face, level)) is not None]


__all__ = ["MIN_FACE_SIZE", "SIDEWAYS_CHECK", "SIDEWAYS_FACE", "TIGHT_CROP", "Measured", "cut_tight", "on_its_side",
           "tight_notes", "too_small"]
