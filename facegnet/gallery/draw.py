"""Drawing identification results onto a copy of a photo (``facegnet identify --annotate``)."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from facegnet.gallery.gallery import Identification

KNOWN_COLOUR = (40, 200, 60)
UNKNOWN_COLOUR = (230, 50, 40)


def annotate(image: np.ndarray, matches: Sequence[Identification]) -> Image.Image:
    """A copy of ``image`` (RGB uint8) with each face's box and "name similarity" drawn on it."""
    canvas = Image.fromarray(np.ascontiguousarray(image)).convert("RGB")
    draw = ImageDraw.Draw(canvas)
    # Scale lines and text with the photo so labels stay readable on both thumbnails and large photos.
    side = max(canvas.size)
    width = max(2, side // 300)
    try:
        font = ImageFont.load_default(size=max(12, side // 40))
    except TypeError:  # Pillow < 10.1 has one fixed-size default font
        font = ImageFont.load_default()
    for match in matches:
        if match.face is None:
            continue
        x1, y1, x2, y2 = (float(v) for v in match.face.box)
        colour = KNOWN_COLOUR if match.known else UNKNOWN_COLOUR
        draw.rectangle([x1, y1, x2, y2], outline=colour, width=width)
        label = f"{match.name} {match.similarity:.2f}"
        left, top, right, bottom = draw.textbbox((0, 0), label, font=font)
        text_h = bottom - top + 2 * width
        y_text = y1 - text_h if y1 - text_h >= 0 else y2  # above the box, or below it at the top edge
        draw.rectangle([x1, y_text, x1 + (right - left) + 2 * width, y_text + text_h], fill=colour)
        draw.text((x1 + width, y_text + width - top), label, fill=(255, 255, 255), font=font)
    return canvas


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
