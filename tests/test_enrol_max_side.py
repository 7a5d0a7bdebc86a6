"""Enrolling a big photo decodes it reduced (``Gallery(max_side=…)``, ``facegnet enroll --max-side``): an
8000×8000 JPEG with an LFW face in it enrols with the process's peak memory barely above what it held before,
its box and landmarks stored in the photo's own pixels, and a rebuild re-embeds it the same way. A photo no
larger than ``max_side`` is stored exactly as without it. (The server's enrolment: tests/test_server_processes.py.)
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import lfw_photo, process_memory, reset_peak_memory, write_big_photo

from facegnet.gallery import Gallery

#: The LFW face is pasted at this offset, upscaled this many times, into an 8000×8000 grey photo.
OFFSET, UPSCALE, SIDE = (3000, 2500), 8, 8000
#: Decoded reduced, enrolling the 8000×8000 photo raised the peak by 17-140 MB; decoded at full size, by 1.5 GB.
PEAK_RISE_LIMIT = 400e6


@pytest.fixture(scope="module")
def big_photo(tmp_path_factory) -> Path:
    return write_big_photo(tmp_path_factory.mktemp("big") / "big.jpg", lfw_photo("Colin_Powell", 6), SIDE, OFFSET,
                           UPSCALE)


def stored(gallery: Gallery, name: str):
    return gallery.store.templates(name, with_embeddings=True)[0]


def test_a_big_photo_enrols_reduced_with_bounded_memory(big_photo: Path, recognizer, tmp_path: Path) -> None:
    with Gallery(tmp_path / "g", recognizer=recognizer, create=True, max_side=2048) as gallery:
        # The networks load (and their buffers grow) on a photo of ordinary size first.
        assert gallery.enroll("small", lfw_photo("Colin_Powell", 6)).status == "enrolled"
        rss = process_memory("VmRSS")
        reset_peak_memory()
        result = gallery.enroll("big", big_photo)
        rise = process_memory("VmHWM") - rss
        assert result.status == "enrolled", result
        assert rise < PEAK_RISE_LIMIT, f"peak memory rose {rise / 1e6:.0f} MB enrolling the 8000×8000 photo"

        small, big = stored(gallery, "small"), stored(gallery, "big")
        expected = np.asarray(small.box) * UPSCALE + np.float32(OFFSET * 2)  # the face, in the big photo's pixels
        width = expected[2] - expected[0]  # (MTCNN's box edges move with the scale a face is found at)
        assert np.abs(np.asarray(big.box) - expected).max() < 0.2 * width, (big.box, expected)
        expected_landmarks = np.asarray(small.landmarks) * UPSCALE + np.float32(OFFSET)
        assert np.abs(big.landmarks - expected_landmarks).max() < 0.1 * width, (big.landmarks, expected_landmarks)
        assert float(small.embedding @ big.embedding) > 0.8  # the same face, reduced or not

        gallery.rebuild(progress=False)  # re-embedded from the photo decoded as enrolment decoded it
        assert np.allclose(stored(gallery, "big").embedding, big.embedding, atol=1e-4)
        assert np.allclose(stored(gallery, "small").embedding, small.embedding, atol=1e-4)


def test_a_photo_within_max_side_is_stored_as_without_it(recognizer, tmp_path: Path) -> None:
    photo = lfw_photo("Serena_Williams", 1)  # 250×250
    records = []
    for max_side in (None, 2048, 250):
        with Gallery(tmp_path / f"g{max_side}", recognizer=recognizer, create=True, max_side=max_side) as gallery:
            assert gallery.enroll("Serena", photo).status == "enrolled"
            records.append(stored(gallery, "Serena"))
    for record in records[1:]:
        assert record.box == records[0].box and record.quality == records[0].quality
        assert np.array_equal(record.landmarks, records[0].landmarks)
        assert np.array_equal(record.embedding, records[0].embedding)


def test_a_face_too_small_once_reduced_says_so(recognizer, tmp_path: Path) -> None:
    with Gallery(tmp_path / "g", recognizer=recognizer, create=True, max_side=100) as gallery:
        with pytest.raises(Exception) as caught:  # the LFW face is about 100 px: about 40 once halved
            gallery.enroll("Serena", lfw_photo("Serena_Williams", 1))
        assert "face too small" in str(caught.value) and "decoded reduced to 100×100" in str(caught.value)
    with pytest.raises(Exception, match="max_side"):
        Gallery(tmp_path / "h", recognizer=recognizer, create=True, max_side=0)


def test_cli_enroll_max_side(big_photo: Path, tmp_path: Path, capsys) -> None:
    from facegnet.cli import main

    folder = tmp_path / "people" / "Colin_Powell"
    folder.mkdir(parents=True)
    (folder / "big.jpg").symlink_to(big_photo)
    gallery = tmp_path / "g"
    assert main(["enroll", str(folder.parent), "--gallery", str(gallery), "--max-side", "-1", "--quiet"]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--max-side" in err, err
    assert main(["enroll", str(folder.parent), "--gallery", str(gallery), "--quiet"]) == 0  # default: 2048
    with Gallery(gallery) as opened:
        box = opened.templates("Colin_Powell")[0].box
    assert OFFSET[0] < box[0] < box[2] < OFFSET[0] + 250 * UPSCALE, box  # in the photo's own pixels
