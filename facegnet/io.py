"""Reading images: any path, PIL image or numpy array becomes an RGB ``uint8`` array.

EXIF orientation is applied (phone photos are stored sideways), and every Pillow mode a user meets
(L, LA, I;16, I, F, P, PA, RGBA, CMYK, YCbCr) is converted to RGB. Anything that is not a readable image
raises :class:`ImageError` naming the file and the reason.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from facegnet.errors import FacegnetError, ImageError

ImageLike = Union[str, os.PathLike, Image.Image, np.ndarray]

#: Suffixes of the files facegnet reads as photos when it walks a folder (enrol, cluster, prepare, training crops).
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm", ".pgm"})

#: Decompression-bomb guard: larger images are refused rather than exhausting memory.
MAX_PIXELS = 200_000_000


def _to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to RGB; transparency is composited onto white (as viewers show it)."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # 16-bit / float greyscale: rescale to 8 bits using the actual range.
        array = np.asarray(image, dtype=np.float32)
        low, high = float(array.min()), float(array.max())
        scale = 255.0 / (high - low) if high > low else 0.0
        array = ((array - low) * scale).clip(0, 255).astype(np.uint8)
        return Image.fromarray(array, mode="L").convert("RGB")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, image).convert("RGB")
    return image.convert("RGB")


def _array_to_rgb(array: np.ndarray, source: str) -> np.ndarray:
    """Validate a numpy image (H×W, H×W×1, H×W×3 or H×W×4; RGB order) and return it as RGB uint8."""
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4) or min(array.shape[:2]) < 1:
        raise ImageError(f"array of shape {array.shape} is not an H×W×3 image", source)
    if array.dtype != np.uint8:
        if np.issubdtype(array.dtype, np.floating) and array.size and float(np.nanmax(array)) <= 1.0:
            array = array * 255.0  # float images in [0, 1]
        array = np.nan_to_num(array).clip(0, 255).astype(np.uint8)
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    elif array.shape[2] == 4:
        array = array[:, :, :3]
    return np.ascontiguousarray(array)


def load_image(source: ImageLike) -> np.ndarray:
    """Load ``source`` as an RGB ``uint8`` array of shape (H, W, 3).

    Accepts a file path, a PIL image or a numpy array (RGB channel order). EXIF orientation is applied.
    Raises :class:`ImageError` for a missing, unreadable or non-image file.
    """
    if isinstance(source, np.ndarray):
        return _array_to_rgb(source, "<array>")
    if isinstance(source, Image.Image):
        return np.asarray(_to_rgb(ImageOps.exif_transpose(source)))
    if not isinstance(source, (str, os.PathLike)):
        raise ImageError(f"cannot read an image from a {type(source).__name__}")
    path = Path(source)
    if not path.exists():
        raise ImageError("file not found", path)
    if path.is_dir():
        raise ImageError("is a directory, not an image", path)
    if path.stat().st_size == 0:  # an interrupted copy or download: say so rather than "unrecognised format"
        raise ImageError("empty file (0 bytes)", path)
    try:
        with Image.open(path) as image:
            if image.width * image.height > MAX_PIXELS:
                raise ImageError(f"image too large ({image.width}×{image.height} pixels)", path)
            image = ImageOps.exif_transpose(image)  # also forces the decode
            image.load()
            return np.asarray(_to_rgb(image))
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError("not an image (unrecognised file format)", path) from None
    except PermissionError:
        raise ImageError("permission denied", path) from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ImageError(f"unreadable or truncated image ({exc})", path) from None



def load_image_or_error(source: ImageLike) -> np.ndarray | FacegnetError:
    """:func:`load_image`, returning the error instead of raising it (for pipelines that go on past a bad photo)."""
    try:
        return load_image(source)
    except FacegnetError as exc:
        return exc

def describe(source: ImageLike) -> str:
    """A short name for ``source`` in messages: the path, or the kind of object."""
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    return f"<{type(source).__name__}>"
