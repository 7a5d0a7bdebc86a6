"""load_image: every mode and orientation a user meets becomes upright RGB uint8; bad files raise ImageError."""
from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from facegnet.errors import ImageError
from facegnet.io import load_image, load_image_reduced
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


# ---------------------------------------------------------------------------------------------- big photos
def _jpeg_bytes(image: Image.Image, **kwargs) -> bytes:
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=85, **kwargs)
    return out.getvalue()


@pytest.fixture(scope="module")
def big_jpeg(rgb) -> bytes:
    """A 4000×3000 JPEG of an LFW face (upscaled)."""
    return _jpeg_bytes(Image.fromarray(rgb).resize((4000, 3000), Image.BILINEAR))


def test_big_jpeg_is_decoded_reduced_by_the_codec(tmp_path, big_jpeg):
    decoded = load_image_reduced(big_jpeg, 1024, name="big.jpg")
    # DCT scaling at 1/4 gives exactly 1000×750; a resize after a full decode would have given 1024×768.
    assert decoded.array.shape == (750, 1000, 3) and (decoded.width, decoded.height) == (4000, 3000)
    assert decoded.scale == (4.0, 4.0) and decoded.reduced
    path = tmp_path / "big.jpg"
    path.write_bytes(big_jpeg)
    assert np.array_equal(load_image(path, max_side=1024), decoded.array)  # a file decodes as its bytes
    assert load_image_reduced(big_jpeg, None).array.shape == (3000, 4000, 3)  # None: full size
    small = load_image_reduced(lfw_photo(*PHOTO), 1024)
    assert small.array.shape == (250, 250, 3) and not small.reduced and small.scale == (1.0, 1.0)


def test_big_png_is_resized_after_decoding_and_sideways_photos_stay_upright(rgb):
    png = io.BytesIO()
    Image.fromarray(rgb).resize((2400, 1600)).save(png, format="PNG", compress_level=1)
    decoded = load_image_reduced(png.getvalue(), 1024)
    assert decoded.array.shape == (683, 1024, 3) and (decoded.width, decoded.height) == (2400, 1600)
    # Stored 3000 wide, 2000 high, with the EXIF tag "turn 90°": upright it is 2000 wide and 3000 high.
    exif = Image.Exif()
    exif[0x0112] = 6
    sideways = _jpeg_bytes(Image.fromarray(rgb).resize((3000, 2000)), exif=exif.tobytes())
    upright = load_image_reduced(sideways, 1024)
    assert (upright.width, upright.height) == (2000, 3000) and upright.array.shape[0] > upright.array.shape[1]
    assert max(upright.array.shape[:2]) <= 1024 and abs(upright.scale[0] - upright.scale[1]) < 0.01


def test_bytes_errors_name_the_upload_and_bombs_are_refused_before_decoding():
    for data, reason in ((b"", "empty file"), (b"not a photo" * 10, "not an image"),
                         (lfw_photo(*PHOTO).read_bytes()[:3000], "truncated")):
        with pytest.raises(ImageError) as info:
            load_image_reduced(data, 1024, name="upload.jpg")
        assert str(info.value).startswith("upload.jpg: ") and reason in str(info.value)
    # A PNG whose header claims 50000×50000 pixels (7.5 GB decoded): refused from the header alone.
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    bomb = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 50000, 50000, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 1000)) + chunk(b"IEND", b""))
    with pytest.raises(ImageError, match="image too large"):
        load_image_reduced(bomb, 1024, name="bomb.png")
