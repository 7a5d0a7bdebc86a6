"""Reading images: any path, PIL image or numpy array becomes an RGB ``uint8`` array.

EXIF orientation is applied (phone photos are stored sideways), and every Pillow mode a user meets
(L, LA, I;16, I, F, P, PA, RGBA, CMYK, YCbCr) is converted to RGB. Anything that is not a readable image
raises :class:`ImageError` naming the file and the reason.

Big photos can be decoded reduced (``max_side``): a JPEG through its DCT scaling (``Image.draft``: an 8000×8000
photo is decoded at 1/4, never holding its full pixels), any other format resized after decoding. Detection
needs no more than a couple of thousand pixels a side, and a server must not spend gigabytes on one upload.
"""
from __future__ import annotations

import io
import os
from dataclasses import dataclass
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

#: The longest side a server and ``facegnet enroll``, ``identify`` and ``cluster`` decode photos to
#: (``--max-side``); None anywhere else (the Python API's default).
DEFAULT_MAX_SIDE = 2048

#: A JPEG is DCT-scaled to no less than this fraction of ``max_side`` (then resized the rest of the way).
_DRAFT_FLOOR = 0.75


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


@dataclass(frozen=True)
class Decoded:
    """A photo decoded at most ``max_side`` pixels a side, and the size of the photo itself.

    ``scale`` maps coordinates in ``array`` back to the photo's own: ``x_photo = x * scale[0]``.
    """

    array: np.ndarray
    width: int
    height: int

    @property
    def scale(self) -> tuple[float, float]:
        return self.width / self.array.shape[1], self.height / self.array.shape[0]

    @property
    def reduced(self) -> bool:
        return self.array.shape[1] != self.width or self.array.shape[0] != self.height


def load_image(source: ImageLike, max_side: int | None = None) -> np.ndarray:
    """Load ``source`` as an RGB ``uint8`` array of shape (H, W, 3).

    Accepts a file path, a PIL image or a numpy array (RGB channel order). EXIF orientation is applied.
    With ``max_side``, a larger photo comes back reduced to at most that many pixels a side (see
    :func:`load_image_reduced` for the scale back to its own coordinates).
    Raises :class:`ImageError` for a missing, unreadable or non-image file.
    """
    if max_side is not None:
        return load_image_reduced(source, max_side).array
    if isinstance(source, np.ndarray):
        return _array_to_rgb(source, "<array>")
    if isinstance(source, Image.Image):
        return np.asarray(_to_rgb(ImageOps.exif_transpose(source)))
    return _decode(_opener(source), _label(source), None).array


def load_image_reduced(source: ImageLike | bytes, max_side: int | None = DEFAULT_MAX_SIDE, *,
                       name: str | None = None) -> Decoded:
    """Decode ``source`` (a path, the bytes of a file, a PIL image or an array) at most ``max_side`` a side.

    A JPEG is decoded at 1/2, 1/4 or 1/8 of its size by the codec itself when that still leaves at least
    3/4 of ``max_side``; anything still larger is resized (area-averaged). ``name`` labels errors about bytes.
    Returns the array with the photo's own (upright) width and height.
    """
    if max_side is not None and int(max_side) < 1:
        raise ValueError(f"max_side must be positive, not {max_side}")
    if isinstance(source, np.ndarray):
        array = _array_to_rgb(source, name or "<array>")
        if max_side is None or max(array.shape[:2]) <= max_side:  # as load_image gives it: not copied
            return Decoded(array, array.shape[1], array.shape[0])
        return _shrink(Image.fromarray(array), max_side, array.shape[1], array.shape[0])
    if isinstance(source, Image.Image):
        image = _to_rgb(ImageOps.exif_transpose(source))
        return _shrink(image, max_side, image.width, image.height)
    if isinstance(source, (bytes, bytearray, memoryview)):
        label = name or "<bytes>"
        if len(source) == 0:
            raise ImageError("empty file (0 bytes)", label)
        return _decode(lambda: Image.open(io.BytesIO(bytes(source))), label, max_side)
    return _decode(_opener(source), _label(source), max_side)


def _label(source) -> str:
    return str(source) if isinstance(source, (str, os.PathLike)) else f"<{type(source).__name__}>"


def _opener(source):
    """A function opening ``source`` (a path) with Pillow, after the checks that name the file's problem."""
    if not isinstance(source, (str, os.PathLike)):
        raise ImageError(f"cannot read an image from a {type(source).__name__}")
    path = Path(source)
    if not path.exists():
        raise ImageError("file not found", path)
    if path.is_dir():
        raise ImageError("is a directory, not an image", path)
    if path.stat().st_size == 0:  # an interrupted copy or download: say so rather than "unrecognised format"
        raise ImageError("empty file (0 bytes)", path)
    return lambda: Image.open(path)


def _decode(open_image, label: str, max_side: int | None) -> Decoded:
    try:
        with open_image() as image:
            if image.width * image.height > MAX_PIXELS:
                raise ImageError(f"image too large ({image.width}×{image.height} pixels)", label)
            width, height = image.size
            if _orientation(image) in (5, 6, 7, 8):  # stored sideways: upright, width and height swap
                width, height = height, width
            if max_side is not None and image.format == "JPEG" and max(width, height) > max_side:
                floor = _DRAFT_FLOOR * max_side / max(width, height)
                image.draft("RGB", (max(1, int(image.width * floor)), max(1, int(image.height * floor))))
            image = ImageOps.exif_transpose(image)  # also forces the decode
            image.load()
            return _shrink(_to_rgb(image), max_side, width, height)
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError("not an image (unrecognised file format)", label) from None
    except PermissionError:
        raise ImageError("permission denied", label) from None
    except Image.DecompressionBombError:  # Pillow's own guard, past twice its limit: refused from the header
        raise ImageError(f"image too large (more than {2 * Image.MAX_IMAGE_PIXELS} pixels)", label) from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageError(f"unreadable or truncated image ({exc})", label) from None


def _orientation(image: Image.Image) -> int:
    try:
        return int(image.getexif().get(0x0112, 1))
    except (OSError, ValueError, TypeError, AttributeError, SyntaxError):  # a broken EXIF block
        return 1


def _shrink(image: Image.Image, max_side: int | None, width: int, height: int) -> Decoded:
    """The image (RGB) as an array at most ``max_side`` a side; ``width``×``height`` is the photo's own size."""
    image = _to_rgb(image)
    if max_side is not None and max(image.size) > max_side:
        factor = max_side / max(image.size)
        size = (max(1, round(image.width * factor)), max(1, round(image.height * factor)))
        image = image.resize(size, Image.BILINEAR, reducing_gap=2.0)
    return Decoded(np.asarray(image), int(width), int(height))


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
