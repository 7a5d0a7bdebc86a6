"""Identifying and clustering decode a big photo reduced, as enrolment does (``Gallery(max_side=…)``,
``cluster_folder(max_side=…)``, ``facegnet identify|cluster --max-side``, default 2048 as ``enroll`` and ``serve``):
an 8000×8000 JPEG with an LFW face in it is identified with the process's peak memory barely above what it held
before, and its face is reported in the photo's own pixels. A photo no larger than ``max_side`` gives exactly the
answer it gave without it. (Enrolment: tests/test_enrol_max_side.py.)
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import lfw_photo, process_memory, reset_peak_memory, write_big_photo
from PIL import Image

from facegnet.gallery import Gallery
from facegnet.io import load_image, load_image_reduced

#: The LFW face is pasted at this offset, upscaled this many times, into an 8000×8000 grey photo.
OFFSET, UPSCALE, SIDE = (3000, 2500), 8, 8000
#: As for enrolment (tests/test_enrol_max_side.py): decoded at full size, the 8000×8000 photo costs about 1.5 GB.
PEAK_RISE_LIMIT = 400e6
FACE = ("Colin_Powell", 6)


@pytest.fixture(scope="module")
def big_photo(tmp_path_factory) -> Path:
    return write_big_photo(tmp_path_factory.mktemp("big") / "big.jpg", lfw_photo(*FACE), SIDE, OFFSET, UPSCALE)


@pytest.fixture(scope="module")
def gallery_dir(tmp_path_factory, recognizer) -> Path:
    path = tmp_path_factory.mktemp("search") / "gallery"
    with Gallery(path, recognizer=recognizer, create=True) as gallery:
        assert gallery.enroll("Colin", lfw_photo(*FACE)).status == "enrolled"
    return path


@pytest.fixture(scope="module")
def small_face(gallery_dir: Path, recognizer):
    """The face of the LFW photo itself: where it must turn up, scaled and moved, in the big photo."""
    with Gallery(gallery_dir, recognizer=recognizer) as gallery:
        [match] = gallery.identify(lfw_photo(*FACE))
    return match.face


def assert_in_big_photo(box, landmarks, small_face, factor: float = 1.0) -> None:
    """``box`` and ``landmarks`` are the LFW face's in the big photo's pixels (times ``factor``)."""
    expected = (np.asarray(small_face.box) * UPSCALE + np.float32(OFFSET * 2)) * factor
    width = expected[2] - expected[0]  # (MTCNN's box edges move with the scale a face is found at)
    assert np.abs(np.asarray(box) - expected).max() < 0.2 * width, (box, expected)
    if landmarks is not None:
        expected_landmarks = (np.asarray(small_face.landmarks) * UPSCALE + np.float32(OFFSET)) * factor
        assert np.abs(np.asarray(landmarks) - expected_landmarks).max() < 0.1 * width, (landmarks, expected_landmarks)


def test_identify_decodes_a_big_photo_reduced(big_photo: Path, gallery_dir: Path, small_face, recognizer) -> None:
    with Gallery(gallery_dir, recognizer=recognizer, max_side=2048) as gallery:
        gallery.identify(lfw_photo("Colin_Powell", 1))  # the networks' buffers grow on an ordinary photo first
        rss = process_memory("VmRSS")
        reset_peak_memory()
        [match] = gallery.identify(big_photo)
        rise = process_memory("VmHWM") - rss
        assert rise < PEAK_RISE_LIMIT, f"peak memory rose {rise / 1e6:.0f} MB identifying the 8000×8000 photo"
        assert match.name == "Colin" and match.similarity > 0.8, match
        assert_in_big_photo(match.face.box, match.face.landmarks, small_face)

        # Pixels in memory larger than max_side are reduced too; the face comes back in their own coordinates.
        pixels = load_image_reduced(big_photo, 3000).array  # 3000×3000 (the codec's 1/2, then resized)
        assert pixels.shape[:2] == (3000, 3000)
        [match] = gallery.identify(pixels)
        assert match.name == "Colin"
        assert_in_big_photo(match.face.box, match.face.landmarks, small_face, 3000 / SIDE)


def test_a_photo_within_max_side_is_identified_and_clustered_as_without_it(gallery_dir: Path, recognizer) -> None:
    from facegnet.cluster import find_faces

    photo = lfw_photo("Colin_Powell", 1)  # 250×250
    answers, clusterings = [], []
    with Gallery(gallery_dir, recognizer=recognizer) as gallery:
        for max_side in (None, 2048, 250):
            gallery.max_side = max_side
            for image in (photo, load_image(photo)):
                [match] = gallery.identify(image, top_k=2)
                answers.append((match.name, match.similarity, match.candidates, match.face.box.tolist(),
                                match.face.landmarks.tolist(), match.face.score))
            faces, embeddings, errors = find_faces(recognizer, [photo], max_side=max_side)
            clusterings.append((faces, embeddings.tobytes(), errors))
    assert all(answer == answers[0] for answer in answers[1:]), answers
    assert all(clustering == clusterings[0] for clustering in clusterings[1:])


def test_cluster_folder_reports_boxes_in_the_photos_own_pixels(big_photo: Path, small_face, recognizer,
                                                               tmp_path: Path) -> None:
    from facegnet.cluster import cluster_folder

    (tmp_path / "big.jpg").symlink_to(big_photo)
    (tmp_path / "other.jpg").symlink_to(lfw_photo("Colin_Powell", 1))
    result = cluster_folder(recognizer, tmp_path, max_side=2048)
    assert result.groups() == [[0, 1]], result.to_dict()  # one person, whatever the size of the photo
    big = next(face for face in result.faces if face.source.endswith("big.jpg"))
    assert_in_big_photo(big.box, big.landmarks, small_face)


def test_cli_identify_and_cluster_max_side(big_photo: Path, gallery_dir: Path, small_face, tmp_path: Path,
                                           capsys) -> None:
    from facegnet.cli import main

    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "big.jpg").symlink_to(big_photo)
    for command in (["identify", str(big_photo)], ["cluster", str(photos)]):
        assert main([*command, "--gallery", str(gallery_dir), "--max-side", "-1"]) != 0
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "--max-side" in err, err

    annotated = tmp_path / "annotated.jpg"
    assert main(["identify", str(big_photo), "--gallery", str(gallery_dir), "--json",  # default: 2048
                 "--annotate", str(annotated)]) == 0
    [face] = json.loads(capsys.readouterr().out)["faces"]
    assert face["name"] == "Colin"
    assert_in_big_photo(face["box"], None, small_face)
    with Image.open(annotated) as image:  # drawn on the photo as decoded (the codec's 1/4: 2000×2000)
        assert image.size == (2000, 2000)

    out = tmp_path / "groups.json"
    assert main(["cluster", str(photos), "--gallery", str(gallery_dir), "--out", str(out)]) == 0
    [group] = json.loads(out.read_text())["groups"]
    assert group["known"] == "Colin"  # the enrolled person the group looks like
    assert_in_big_photo(group["faces"][0]["box"], None, small_face)
