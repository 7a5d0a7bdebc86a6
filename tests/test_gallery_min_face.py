"""One minimum face size, honoured everywhere: verify, enroll, identify (photos and live) share one default,
and a face below the minimum is never named."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facegnet.cli import build_parser, main
from facegnet.detection.quality import MIN_FACE_SIZE
from facegnet.gallery import Gallery, QualityPolicy

REPO = Path(__file__).resolve().parents[1]
LFW = REPO.parent / "shared" / "data" / "lfw" / "images"
pytestmark = pytest.mark.skipif(not LFW.is_dir(), reason="LFW photos not found at ../shared/data/lfw")


def lfw(name: str, n: int) -> Path:
    return LFW / name / f"{name}_{n:04d}.jpg"


@pytest.fixture(scope="module")
def two_sizes(tmp_path_factory) -> Path:
    """Colin Powell at LFW size (a ~100 px face) beside Serena Williams shrunk to a ~30 px face."""
    big = Image.open(lfw("Colin_Powell", 1)).convert("RGB")
    small = Image.open(lfw("Serena_Williams", 1)).convert("RGB").resize((80, 80))
    photo = Image.new("RGB", (360, 250), (128, 128, 128))
    photo.paste(big, (0, 0))
    photo.paste(small, (270, 85))
    path = tmp_path_factory.mktemp("photos") / "two_sizes.png"
    photo.save(path)
    return path


@pytest.fixture(scope="module")
def gallery_dir(tmp_path_factory, recognizer) -> Path:
    path = tmp_path_factory.mktemp("galleries") / "g"
    with Gallery(path, recognizer=recognizer, create=True) as gallery:
        gallery.enroll("Colin_Powell", lfw("Colin_Powell", 2))
        gallery.enroll("Serena_Williams", lfw("Serena_Williams", 2))
    return path


def test_one_default_everywhere(recognizer) -> None:
    parser = build_parser()
    defaults = {
        "verify": parser.parse_args(["verify", "a.jpg", "b.jpg"]).min_face_size,
        "enroll": parser.parse_args(["enroll", "folder"]).min_face_size,
        "identify": parser.parse_args(["identify", "a.jpg"]).min_face_size,
        "identify --camera": parser.parse_args(["identify", "--camera", "0"]).min_face_size,
    }
    assert defaults == dict.fromkeys(defaults, MIN_FACE_SIZE)
    assert recognizer.min_face_size == MIN_FACE_SIZE == QualityPolicy().min_face


def test_identify_does_not_name_faces_below_the_minimum(gallery_dir: Path, two_sizes: Path, recognizer) -> None:
    faces = recognizer.detect(two_sizes, min_face_size=20)
    assert len(faces) == 2 and faces[1].size < MIN_FACE_SIZE <= faces[0].size  # MTCNN finds both
    # By default the pyramid stops at the usable size: the small face is not even searched for.
    assert [f.size >= MIN_FACE_SIZE for f in recognizer.detect(two_sizes)] == [True]
    with Gallery(gallery_dir, recognizer=recognizer) as gallery:
        matches = gallery.identify(two_sizes, threshold=-1.0)  # a threshold that names every face it sees
        assert [m.name for m in matches] == ["Colin_Powell"]
        assert all(m.face.size >= MIN_FACE_SIZE for m in matches)
    # A lower minimum, chosen by the user, lets the small face be named.
    with Gallery(gallery_dir, recognizer=recognizer, quality=QualityPolicy(min_face=20)) as gallery:
        assert len(gallery.identify(two_sizes, threshold=-1.0)) == 2


def test_cli_identify_min_face_size_in_photo_mode(gallery_dir: Path, two_sizes: Path, capsys) -> None:
    def faces(*extra: str) -> tuple[int, list, str]:
        code = main(["identify", str(two_sizes), "--gallery", str(gallery_dir), "--json", *extra])
        out, err = capsys.readouterr()
        return code, json.loads(out)["faces"], err

    code, found, _ = faces()
    assert code == 0 and len(found) == 1 and found[0]["name"] == "Colin_Powell"
    code, found, _ = faces("--min-face-size", "20", "--threshold", "-1")
    assert code == 0 and len(found) == 2
    code, found, err = faces("--min-face-size", "300")
    assert code == 3 and found == [] and "no face found of at least 300 px" in err and err.count("\n") == 1


def test_enrolment_and_verification_use_the_same_rule(tmp_path: Path, recognizer) -> None:
    from facegnet.errors import NoFaceError

    tiny = np.asarray(Image.open(lfw("Serena_Williams", 1)).convert("RGB").resize((80, 80)))  # a ~30 px face
    with pytest.raises(NoFaceError, match=f"at least {MIN_FACE_SIZE} px"):
        recognizer.verify(tiny, lfw("Serena_Williams", 2))
    with Gallery(tmp_path / "g", recognizer=recognizer, create=True) as gallery:
        with pytest.raises(NoFaceError, match=f"at least {MIN_FACE_SIZE} px"):
            gallery.enroll("Serena_Williams", tiny)
