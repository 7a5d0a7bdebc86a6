"""A gallery records the embedding procedure (weights, flip, numerics) and refuses to mix procedures.

Embeddings with and without flip test-time augmentation, or in int8, are not comparable at the card's
thresholds: a gallery enrolled one way and probed another must say so in one line, not answer.
"""
from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from facegnet.errors import GalleryError
from facegnet.gallery import Gallery
from facegnet.gallery.folders import DB_NAME
from facegnet.gallery.procedure import compose, procedure_of

REPO = Path(__file__).resolve().parents[1]
LFW = REPO.parent / "shared" / "data" / "lfw" / "images"
PHOTO = LFW / "Colin_Powell" / "Colin_Powell_0001.jpg"


def no_flip():
    from facegnet.recognizer import FaceRecognizer

    # A threshold is given: the card may hold thresholds for the flip procedure only.
    return FaceRecognizer(flip=False, threshold=0.5)


def test_procedure_names_weights_flip_and_numerics(recognizer) -> None:
    fingerprint = recognizer.fingerprint
    assert procedure_of(recognizer) == compose(fingerprint, True, "fp32") == f"{fingerprint}:flip:fp32"
    assert procedure_of(no_flip()) == f"{fingerprint}:noflip:fp32"


def test_gallery_records_and_refuses_another_procedure(tmp_path: Path, recognizer) -> None:
    path = tmp_path / "g"
    with Gallery(path, recognizer=recognizer, create=True) as gallery:
        gallery.add_embedding("a", np.ones(512, np.float32))
        assert gallery.procedure == procedure_of(recognizer) == gallery.info()["procedure"]
    with pytest.raises(GalleryError) as caught:
        Gallery(path, recognizer=no_flip())
    message = str(caught.value)
    assert str(path) in message and "\n" not in message
    assert "another embedding procedure" in message and "facegnet gallery rebuild" in message
    assert f"{recognizer.fingerprint[:12]}…:flip:fp32" in message
    assert f"{recognizer.fingerprint[:12]}…:noflip:fp32" in message
    # A gallery opened without checking (to list or rebuild) still refuses to identify or enroll.
    with Gallery(path, recognizer=no_flip(), check_fingerprint=False) as gallery:
        assert gallery.people() == [("a", 1)]
        with pytest.raises(GalleryError, match="another embedding procedure"):
            gallery.identify(np.zeros((64, 64, 3), np.uint8))
        with pytest.raises(GalleryError, match="another embedding procedure"):
            gallery.enroll("b", np.zeros((64, 64, 3), np.uint8))
    with Gallery(path, recognizer=recognizer) as gallery:  # the procedure it was made with
        assert len(gallery) == 1


def test_legacy_gallery_means_flip_fp32(tmp_path: Path, recognizer) -> None:
    """Galleries from before procedures were recorded hold only the fingerprint: made with flip, fp32."""
    path = tmp_path / "g"
    with Gallery(path, recognizer=recognizer, create=True) as gallery:
        gallery.add_embedding("a", np.ones(512, np.float32))
    with sqlite3.connect(path / DB_NAME) as conn:
        conn.execute("DELETE FROM meta WHERE key = 'procedure'")
    with Gallery(path, recognizer=recognizer) as gallery:
        assert gallery.procedure == f"{recognizer.fingerprint}:flip:fp32"
    with Gallery(path) as gallery:  # no recogniser yet: the default one for the weights
        assert gallery.procedure_in_use == gallery.procedure
    with pytest.raises(GalleryError, match="another embedding procedure"):
        Gallery(path, recognizer=no_flip())


@pytest.mark.skipif(not PHOTO.is_file(), reason="LFW photos not found at ../shared/data/lfw")
def test_rebuild_switches_the_procedure(tmp_path: Path, recognizer) -> None:
    folder = tmp_path / "in" / "Colin_Powell"
    folder.mkdir(parents=True)
    shutil.copy(PHOTO, folder)
    path = tmp_path / "g"
    with Gallery(path, recognizer=recognizer, create=True) as gallery:
        gallery.enroll_folder(folder.parent, progress=False)
    other = no_flip()
    with Gallery(path, recognizer=other, check_fingerprint=False) as gallery:
        report = gallery.rebuild(progress=False)
        assert report.procedure == procedure_of(other) and report.reembedded == 1
    with Gallery(path, recognizer=other) as gallery:  # accepted now, and the photo is its own best match
        match = gallery.identify(PHOTO)[0]
        assert match.name == "Colin_Powell" and match.similarity > 0.99
    with pytest.raises(GalleryError, match="another embedding procedure"):
        Gallery(path, recognizer=recognizer)
