"""Boxes and names drawn onto images: one module for photos (``identify --annotate``) and live frames alike.

Names are written with one shipped Unicode font, WenQuanYi Micro Hei (``facegnet/assets/wqy-microhei.ttf``,
Apache-2.0, licence beside it), through Pillow's FreeType binding: Latin with accents, Greek, Cyrillic and
CJK names are drawn as written ("José Núñez", "Владимир", "王小明"), never as missing-glyph boxes. Boxes
are drawn with OpenCV straight into the caller's array; each label is rendered once into a small patch
(cached) and copied in, so a live overlay costs little per frame.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

FONT_FILE = Path(__file__).resolve().parent / "assets" / "wqy-microhei.ttf"

# RGB colours (swapped for BGR frames by draw_faces).
KNOWN_COLOUR = (40, 200, 60)  # green: a named person
UNKNOWN_COLOUR = (230, 50, 40)  # red: a stranger
PENDING_COLOUR = (200, 200, 200)  # grey: a live face not identified yet
TEXT_COLOUR = (255, 255, 255)


class Labelled(Protocol):
    """What :func:`annotate` needs of an identification (facegnet.gallery's ``Identification``)."""

    name: str
    similarity: float
    face: object  # a facegnet.detection.detector.Face (with .box) or None

    @property
    def known(self) -> bool: ...


@lru_cache(maxsize=32)
def font(size: int) -> ImageFont.FreeTypeFont:
    """The shipped Unicode font at ``size`` pixels."""
    return ImageFont.truetype(str(FONT_FILE), int(size))


def text_size_for(shape: Sequence[int]) -> int:
    """Label text height in pixels for an image of ``shape`` (h, w, ...): readable on thumbnails and 4K alike."""
    return max(12, int(min(shape[0], shape[1])) // 24)


def line_width_for(shape: Sequence[int]) -> int:
    """Box line width in pixels for an image of ``shape``."""
    return max(2, int(min(shape[0], shape[1])) // 250)


@lru_cache(maxsize=1024)
def label_patch(text: str, size: int, background: tuple[int, int, int],
                foreground: tuple[int, int, int] = TEXT_COLOUR) -> np.ndarray:
    """``text`` rendered on a ``background`` rectangle: an RGB uint8 array (read-only, cached).

    Every label of one size has the same height (the font's ascent + descent), so labels line up.
    """
    face = font(size)
    ascent, descent = face.getmetrics()
    pad = max(2, size // 6)
    width = int(np.ceil(face.getlength(text))) + 2 * pad
    patch = Image.new("RGB", (max(width, 1), ascent + descent + 2 * pad), background)
    ImageDraw.Draw(patch).text((pad, pad), text, font=face, fill=foreground, anchor="la")
    array = np.asarray(patch)
    array.flags.writeable = False
    return array


def paste(image: np.ndarray, patch: np.ndarray, x: int, y: int) -> None:
    """Copy ``patch`` into ``image`` with its top-left corner at (x, y), clipped to the image."""
    height, width = image.shape[:2]
    x0, y0 = max(x, 0), max(y, 0)
    x1, y1 = min(x + patch.shape[1], width), min(y + patch.shape[0], height)
    if x1 > x0 and y1 > y0:
        image[y0:y1, x0:x1] = patch[y0 - y : y1 - y, x0 - x : x1 - x]


def draw_faces(image: np.ndarray, faces: Iterable[tuple[Sequence[float], str, tuple[int, int, int]]], *,
               bgr: bool = False, corner_text: str | None = None) -> np.ndarray:
    """Draw each (box, label, RGB colour) onto ``image`` (H×W×3 uint8, RGB or ``bgr``) in place.

    The label sits on a band of the box's colour above the box, or inside its top edge when there is no
    room above. ``corner_text`` (e.g. the frame rate) goes in the top-right corner. Returns ``image``.
    """
    size, width = text_size_for(image.shape), line_width_for(image.shape)
    order = slice(None, None, -1) if bgr else slice(None)
    for box, label, colour in faces:
        x1, y1, x2, y2 = (int(round(float(v))) for v in box)
        cv2.rectangle(image, (x1, y1), (x2, y2), tuple(int(c) for c in colour[order]), width)
        patch = label_patch(label, size, tuple(colour))
        top = y1 - patch.shape[0] if y1 - patch.shape[0] >= 0 else y1
        paste(image, patch[:, :, order], x1, top)
    if corner_text:
        patch = label_patch(corner_text, size, (0, 0, 0))
        paste(image, patch[:, :, order], image.shape[1] - patch.shape[1], 0)
    return image


def face_label(name: str | None, similarity: float | None) -> str:
    """The text shown for a face: "name 0.87", "unknown 0.31", or "…" while a live face is not identified."""
    if name is None:
        return "…"
    if similarity is None or not np.isfinite(similarity):
        return name
    return f"{name} {similarity:.2f}"


def annotate(image: np.ndarray, matches: Sequence[Labelled]) -> Image.Image:
    """A copy of ``image`` (RGB uint8) with each face's box and "name similarity" drawn on it."""
    canvas = np.array(image, dtype=np.uint8, copy=True)
    draw_faces(canvas, [(m.face.box, face_label(m.name, m.similarity), KNOWN_COLOUR if m.known else UNKNOWN_COLOUR)
                        for m in matches if m.face is not None])
    return Image.fromarray(canvas)


def annotation_paths(images: Sequence[str], out: str | Path) -> list[Path]:
    """Where ``--annotate OUT`` writes each image's copy.

    One image and an OUT with an image suffix: OUT itself. Otherwise OUT is a folder holding
    ``<stem>.jpg`` for each image (``<stem>_2.jpg`` … when names repeat).
    """
    out = Path(out)
    if len(images) == 1 and out.suffix.lower() in (".jpg", ".jpeg", ".png", ".bmp", ".webp"):
        return [out]
    paths, used = [], set()
    for image in images:
        stem = Path(image).stem or "image"
        candidate, n = out / f"{stem}.jpg", 1
        while candidate in used:
            n += 1
            candidate = out / f"{stem}_{n}.jpg"
        used.add(candidate)
        paths.append(candidate)
    return paths


__all__ = ["FONT_FILE", "KNOWN_COLOUR", "UNKNOWN_COLOUR", "PENDING_COLOUR", "font", "label_patch", "draw_faces",
           "face_label", "annotate", "annotation_paths", "text_size_for", "line_width_for", "paste"]
