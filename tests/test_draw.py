"""Names drawn in any script: the shipped font has a real glyph for every character of Latin-with-accents,
Cyrillic and CJK names, and both drawings (``identify --annotate`` and the live overlay) render them."""
from __future__ import annotations

import numpy as np
import pytest
from fontTools.ttLib import TTFont
from PIL import Image

from facegnet.detection.detector import Face
from facegnet.draw import FONT_FILE, KNOWN_COLOUR, annotate, draw_faces, font, label_patch, text_size_for

NAMES = ["José Núñez", "Владимир", "王小明"]
# A code point no font in this project has (plane-15 private use): rendered as the missing-glyph box.
MISSING = "\U000f0000"


@pytest.fixture(scope="module")
def cmap() -> dict[int, str]:
    return TTFont(FONT_FILE).getBestCmap()


def test_the_font_ships_with_its_licence_and_is_small():
    licence = FONT_FILE.with_name("wqy-microhei.LICENSE.txt")
    assert FONT_FILE.is_file() and FONT_FILE.stat().st_size < 5_000_000
    text = licence.read_text(encoding="utf-8")
    assert "Apache License" in text and "Version 2.0" in text and "WenQuanYi" in text


@pytest.mark.parametrize("name", NAMES)
def test_every_character_has_a_real_glyph(cmap, name):
    assert ord(MISSING) not in cmap
    for char in name.replace(" ", ""):
        assert ord(char) in cmap and cmap[ord(char)] != ".notdef", f"no glyph for {char!r} (U+{ord(char):04X})"


def _rendered(char: str, size: int = 32) -> np.ndarray:
    mask = font(size).getmask(char)
    return np.asarray(mask, dtype=np.uint8).reshape(mask.size[1], mask.size[0])


@pytest.mark.parametrize("name", NAMES)
def test_every_character_renders_differently_from_the_missing_glyph_box(name):
    box = _rendered(MISSING)
    for char in name.replace(" ", ""):
        drawn = _rendered(char)
        assert drawn.any(), f"{char!r} rendered nothing"
        assert drawn.shape != box.shape or not np.array_equal(drawn, box), f"{char!r} rendered as the missing glyph"


def _one_box_instead(name: str) -> list[str]:
    """The name with each of its characters in turn replaced by one that has no glyph."""
    return [name[:i] + MISSING + name[i + 1 :] for i, c in enumerate(name) if c != " "]


class _Match:
    def __init__(self, name: str, box) -> None:
        self.name, self.similarity, self.known = name, 0.87, True
        self.face = Face(np.asarray(box, np.float32), 0.99, np.zeros((5, 2), np.float32))


@pytest.mark.parametrize("name", NAMES)
def test_annotate_draws_the_name_not_boxes(name, tmp_path):
    photo = np.full((240, 320, 3), 90, np.uint8)
    drawn = np.asarray(annotate(photo, [_Match(name, [100, 80, 220, 220])]))
    for variant in _one_box_instead(name):  # a character the font lacks would draw the same box as this
        assert not np.array_equal(drawn, np.asarray(annotate(photo, [_Match(variant, [100, 80, 220, 220])]))), variant
    assert tuple(drawn[150, 100]) == KNOWN_COLOUR  # the box's left edge, in RGB
    assert np.array_equal(drawn[:, :95], photo[:, :95])  # nothing drawn outside the box and its label
    Image.fromarray(drawn).save(tmp_path / "annotated.png")


@pytest.mark.parametrize("name", NAMES)
def test_live_overlay_draws_the_name_not_boxes(name):
    from facegnet.live.events import Observation, draw

    def overlay(label: str) -> np.ndarray:
        frame = np.zeros((480, 640, 3), np.uint8)
        obs = Observation(track=1, box=np.array([200, 150, 360, 330], np.float32), name=label, similarity=0.87,
                          detected=True)
        return draw(frame, [obs], fps=24.8)

    drawn = overlay(name)
    for variant in _one_box_instead(name):
        assert not np.array_equal(drawn, overlay(variant)), variant
    assert tuple(drawn[240, 200]) == KNOWN_COLOUR[::-1]  # live frames are BGR
    top_label = label_patch(f"{name} 0.87", text_size_for(drawn.shape), KNOWN_COLOUR)  # above the box
    assert np.array_equal(drawn[150 - top_label.shape[0] : 150, 200 : 200 + top_label.shape[1]], top_label[:, :, ::-1])


def test_labels_are_clipped_at_the_image_edges():
    image = np.zeros((60, 80, 3), np.uint8)
    label = "王小明 0.99"
    draw_faces(image, [([50, 0, 79, 59], label, KNOWN_COLOUR)])
    patch = label_patch(label, text_size_for(image.shape), KNOWN_COLOUR)
    assert patch.shape[1] > 80 - 50  # wider than the space left right of the box: it must be cut, not wrap
    # No room above the box: the label sits inside its top edge, cut at the image's right edge, pixel for pixel.
    height = min(patch.shape[0], 60)
    assert np.array_equal(image[:height, 50:], patch[:height, : 80 - 50])
