"""load_image: every mode and orientation a user meets becomes upright RGB uint8; bad files raise ImageError."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from facegnet.errors import ImageError
from facegnet.io import load_image
from tests.conftest import lfw_photo

PHOTO = ("Aaron_Peirsol", 1)


@pytest.fixture(scope="module")
def rgb() -> np.ndarray:
    return np.asarray(Image.open(lfw_photo(*PHOTO)).convert("RGB"))


def test_path_and_pil_and_array_agree(rgb):
    path = lfw_photo(*PHOTO)
    from_path = load_image(path)
    assert from_path.shape == (250, 250, 3) and from_path.dtype == np.uint8
    assert np.array_equal(from_path, load_image(str(path)))
    assert np.array_equal(from_path, load_image(Image.open(path)))
    assert np.array_equal(from_path, load_image(rgb))


@pytest.mark.parametrize("mode", ["L", "LA", "P", "RGBA", "CMYK", "I;16", "I", "F", "YCbCr", "1"])
def test_every_mode_becomes_rgb(tmp_path, rgb, mode):
    image = Image.fromarray(rgb)
    if mode == "I;16":
        converted = Image.fromarray((np.asarray(image.convert("L")).astype(np.uint16) * 257))
    else:
        converted = image.convert(mode)
    suffix = ".jpg" if mode in ("L", "CMYK", "YCbCr") else ".tif" if mode in ("I;16", "I", "F") else ".png"
    target = tmp_path / f"face{suffix}"
    converted.save(target)
    out = load_image(target)
    assert out.shape == (250, 250, 3) and out.dtype == np.uint8
    # The picture survives the conversion: still strongly correlated with the grey original.
    grey = np.asarray(image.convert("L"), dtype=np.float64).ravel()
    assert np.corrcoef(grey, out.mean(axis=2).ravel())[0, 1] > (0.5 if mode == "1" else 0.9)  # "1" is dithered


def test_transparency_composited_on_white(tmp_path):
    rgba = np.zeros((20, 20, 4), dtype=np.uint8)
    rgba[:10, :, :3] = (255, 0, 0)
    rgba[:10, :, 3] = 255  # top half opaque red, bottom half fully transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "t.png")
    out = load_image(tmp_path / "t.png")
    assert tuple(out[0, 0]) == (255, 0, 0)
    assert tuple(out[-1, -1]) == (255, 255, 255)


@pytest.mark.parametrize("orientation, rotate", [(6, 90), (8, 270), (3, 180)])
def test_exif_orientation_is_applied(tmp_path, rgb, orientation, rotate):
    # Store the pixels rotated, with the EXIF tag that tells viewers how to turn them upright again.
    stored = Image.fromarray(rgb).rotate(rotate, expand=True)
    exif = Image.Exif()
    exif[0x0112] = orientation
    target = tmp_path / "phone.jpg"
    stored.save(target, exif=exif.tobytes(), quality=95)
    out = load_image(target)
    assert out.shape == rgb.shape
    assert np.abs(out.astype(int) - rgb.astype(int)).mean() < 6  # upright again (JPEG noise aside)


def test_numpy_variants():
    grey = np.full((30, 40), 100, dtype=np.uint8)
    assert load_image(grey).shape == (30, 40, 3)
    floats = np.full((30, 40, 3), 0.5, dtype=np.float32)
    assert load_image(floats)[0, 0, 0] == 127
    rgba = np.zeros((30, 40, 4), dtype=np.uint8)
    assert load_image(rgba).shape == (30, 40, 3)
    with pytest.raises(ImageError, match="shape"):
        load_image(np.zeros((30, 40, 7), dtype=np.uint8))


def test_bad_files_name_the_file_and_the_reason(tmp_path):
    text = tmp_path / "notes.jpg"
    text.write_text("this is not a photo\n")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    truncated = tmp_path / "cut.jpg"
    truncated.write_bytes(lfw_photo(*PHOTO).read_bytes()[:3000])
    cases = {
        tmp_path / "missing.jpg": "not found",
        tmp_path: "directory",
        text: "not an image",
        empty: "empty file",
        truncated: "truncated",
    }
    for path, reason in cases.items():
        with pytest.raises(ImageError) as info:
            load_image(path)
        message = str(info.value)
        assert str(path) in message and reason in message
        assert "\n" not in message
    with pytest.raises(ImageError):
        load_image(12345)  # type: ignore[arg-type]
