"""Folder enrolment as a pipeline (facegnet.gallery.enrolment_rules.enroll_photos): photos read on threads one chunk
ahead, a chunk's faces embedded as one batch, results in folder order, duplicates and bad photos handled."""
from __future__ import annotations

import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

from facegnet.gallery import Gallery
from facegnet.gallery.enrolment_rules import ENROLL_CHUNK
from facegnet.gallery.folders import discover
from tests.conftest import LFW_IMAGES

pytestmark = pytest.mark.skipif(not LFW_IMAGES.is_dir(), reason="LFW photos not available")


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """More than two chunks of photos: LFW people (one photo each), a copy of one, an unreadable file."""
    root = tmp_path_factory.mktemp("many")
    people = sorted(p for p in LFW_IMAGES.iterdir() if p.is_dir())[::97][: 2 * ENROLL_CHUNK + 3]
    for person in people:
        shutil.copy(next(iter(sorted(person.glob("*.jpg")))), root / f"{person.name}.jpg")
    shutil.copy(root / f"{people[0].name}.jpg", root / f"{people[0].name}_2.jpg")  # the same bytes again
    (root / "Broken_Photo.jpg").write_bytes(b"not a jpeg")
    return root


def test_folder_results_follow_folder_order_and_match_single_enrolment(folder: Path, recognizer,
                                                                       tmp_path: Path, monkeypatch) -> None:
    readers: set[str] = set()
    original = Gallery._prepare_enrolment

    def spy(self, *args):
        readers.add(threading.current_thread().name)
        return original(self, *args)

    monkeypatch.setattr(Gallery, "_prepare_enrolment", spy)
    batches: list[int] = []
    embed = recognizer.embed_face_list
    monkeypatch.setattr(recognizer, "embed_face_list", lambda faces: batches.append(len(faces)) or embed(faces))
    with Gallery(tmp_path / "g", recognizer=recognizer, create=True) as gallery:
        report = gallery.enroll_folder(folder, progress=False)
        # One result per photo, in the order the folder is walked.
        assert [Path(r.source).name for r in report.results] == [photo.name for _, photo in discover(folder)]
        assert len(report.results) == len(list(folder.iterdir()))
        status = {Path(r.source).name: r.status for r in report.results}
        assert status["Broken_Photo.jpg"] == "skipped"
        duplicates = [n for n in status if n.endswith("_2.jpg")]
        assert [status[n] for n in duplicates] == ["exists"]  # same sha256 as its original, in the same run
        assert len(report.enrolled) >= 2 * ENROLL_CHUNK
        stored = dict(zip(*gallery.store.embeddings()))
        templates = {Path(t.source).name: t.id for t in gallery.templates()}
    assert all(name.startswith("enroll-read") for name in readers)  # photos read off the main thread
    assert max(batches) > 1  # a chunk's faces embedded together
    # The batched embedding is the one a single-photo enrolment stores.
    name = sorted(templates)[3]
    with Gallery(tmp_path / "single", recognizer=recognizer, create=True) as single:
        result = single.enroll(Path(name).stem, folder / name)
        alone = dict(zip(*single.store.embeddings()))[result.template_id]
    assert np.allclose(stored[templates[name]], alone, atol=1e-5)


def test_identify_many_equals_identify_photo_by_photo(folder: Path, recognizer, tmp_path: Path) -> None:
    from facegnet.io import load_image

    photos = sorted(p for p in folder.glob("*.jpg") if p.name != "Broken_Photo.jpg")[:6]
    with Gallery(tmp_path / "g", recognizer=recognizer, create=True) as gallery:
        gallery.enroll_folder(folder, progress=False)
        arrays = [load_image(p) for p in photos]
        arrays.append(np.zeros((120, 160, 3), np.uint8))  # no face: an empty list in its place
        together = gallery.identify_many(arrays)
        alone = [gallery.identify(a) for a in arrays]
    assert len(together) == len(arrays) and together[-1] == []
    for many, one in zip(together, alone):
        assert [m.name for m in many] == [m.name for m in one]
        assert np.allclose([m.similarity for m in many], [m.similarity for m in one], atol=1e-5)
        assert all(np.allclose(a.face.box, b.face.box) for a, b in zip(many, one))
    assert [m[0].name for m in together[:-1]] == [p.stem.removesuffix("_2") for p in photos]  # they name themselves
