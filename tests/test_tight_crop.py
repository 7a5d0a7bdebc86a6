"""Photos cut close to the face: the share of the aligned crop outside the photo (``facegnet.align.outside_share``,
``Face.outside``) and the warning users get for it from the API, ``facegnet enroll|identify`` and the server.

Real LFW photos and MTCNN: a whole LFW photo (250×250) leaves none of its aligned crop outside; the same photo
cut with PIL to MTCNN's box leaves about half of it outside and must warn.
"""
from __future__ import annotations

import json
import re
import shutil
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import cut_to_box, lfw_photo

from facegnet.align import CROP_SIZE, TEMPLATE, outside_share, similarity_transform
from facegnet.cli import main
from facegnet.detection.quality import TIGHT_CROP, cut_tight


@pytest.fixture(scope="module")
def photos(tmp_path_factory, recognizer) -> dict[str, Path]:
    """An enrolment folder (Colin: a whole photo, Serena: one cut to the face) and two probes, likewise."""
    root = tmp_path_factory.mktemp("tight")
    people = root / "people"
    (people / "Colin").mkdir(parents=True)
    shutil.copy(lfw_photo("Colin_Powell", 1), people / "Colin" / "whole.jpg")
    cut_to_box(recognizer, lfw_photo("Serena_Williams", 1), people / "Serena" / "tight.jpg")
    probes = root / "probes"
    probes.mkdir()
    shutil.copy(lfw_photo("Colin_Powell", 3), probes / "whole.jpg")
    return {"people": people, "whole": probes / "whole.jpg",
            "tight": cut_to_box(recognizer, lfw_photo("Serena_Williams", 3), probes / "tight.jpg")}


def test_outside_share_is_the_black_share_of_the_warp():
    # A 112×112 photo whose face sits on the template: nothing outside; its right three quarters: a quarter.
    assert outside_share((112, 112), TEMPLATE) == 0.0
    assert outside_share((112, 84, 3), TEMPLATE - (28, 0)) == pytest.approx(0.25)
    # Any photo and face: the share of a nearest-neighbour warp of a mask of ones that stays black.
    rng = np.random.default_rng(0)
    for _ in range(200):
        height, width = (int(v) for v in rng.integers(40, 300, 2))
        angle, scale = rng.uniform(-0.6, 0.6), rng.uniform(0.3, 2.5)
        rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        landmarks = (TEMPLATE - 56) @ rotation.T * scale + rng.uniform(0, (width, height)) + rng.normal(0, 1, (5, 2))
        matrix = similarity_transform(landmarks, TEMPLATE)
        inside = cv2.warpAffine(np.ones((height, width), np.uint8), matrix, (CROP_SIZE, CROP_SIZE),
                                flags=cv2.INTER_NEAREST)
        assert outside_share((height, width), landmarks) == pytest.approx(1.0 - inside.mean(), abs=1e-9)


def test_faces_carry_their_share_outside_and_tight_ones_are_named(photos, recognizer):
    whole = recognizer.detect(photos["whole"])[0]
    tight = recognizer.detect(photos["tight"])[0]
    assert whole.outside is not None and whole.outside < 0.05 and cut_tight(whole) is None
    assert tight.outside is not None and tight.outside > max(0.4, TIGHT_CROP)
    assert re.fullmatch(r"cut tight \(\d+% of its aligned crop lies outside the photo\); scores between photos "
                        r"cut so run high: enrol and search whole photos", cut_tight(tight))
    assert tight.to_dict()["outside"] == round(tight.outside, 3)

    notes = recognizer.verify(photos["whole"], photos["tight"]).notes
    assert [n for n in notes if "cut tight" in n] == [f"{photos['tight']}: face is {cut_tight(tight)}"]
    assert not any("cut tight" in n for n in recognizer.verify(photos["whole"], photos["whole"]).notes)
    # Faces read back from a detection cache (which stores boxes and landmarks only) are measured again.
    from facegnet.detection.cache import DetectionCache

    recognizer._detection_cache = DetectionCache(photos["people"].parent / "detections.sqlite", recognizer.detector)
    try:
        for _ in range(2):  # the first run fills the cache, the second reads it
            [result] = recognizer.embed_images([photos["tight"]])
            assert result.face.outside == pytest.approx(tight.outside)
    finally:
        recognizer._detection_cache.close()
        recognizer._detection_cache = None


def test_enroll_and_identify_warn_on_stderr_naming_the_file(photos, tmp_path, capsys):
    gallery = tmp_path / "gallery"
    code = main(["enroll", str(photos["people"]), "--gallery", str(gallery), "--quiet"])
    out, err = capsys.readouterr()
    assert code == 0, err
    warned = [line for line in err.splitlines() if "cut tight" in line]
    assert len(warned) == 1 and re.match(r"facegnet: warning: \S*Serena/tight\.jpg: face is cut tight \(\d+% ",
                                         warned[0]), err
    assert "enrolled 2 photo(s) of 2 person(s)" in out

    code = main(["identify", str(photos["whole"]), str(photos["tight"]), "--gallery", str(gallery), "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    warned = [line for line in err.splitlines() if "cut tight" in line]
    whole, tight = (json.loads(line)["faces"][0] for line in out.splitlines())
    assert whole["outside"] < 0.05 and tight["outside"] > TIGHT_CROP
    assert len(warned) == 1 and warned[0].startswith(f"facegnet: warning: {photos['tight']}: face 1 is cut tight (")
    assert abs(share_in(warned[0]) - 100 * tight["outside"]) <= 1, (warned, tight)


def share_in(line: str) -> int:
    """The percentage a cut-tight phrase gives."""
    return int(re.search(r"cut tight \((\d+)% of its aligned crop lies outside the photo\)", line).group(1))


TOKEN = "test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def server(gallery: Path, recognizer):
    """A test client of a server on ``gallery``."""
    pytest.importorskip("fastapi", reason="the server extra is not installed: pip install 'facegnet[server]'")
    with warnings.catch_warnings():  # starlette's TestClient prefers httpx2; httpx works
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient
    from facegnet.server import create_app
    return TestClient(create_app(gallery, TOKEN, recognizer=recognizer))


def files(*paths: Path) -> list:
    return [("file", (path.name, path.read_bytes(), "image/jpeg")) for path in paths]


def test_server_enrol_and_identify_answer_with_the_warning(photos, tmp_path, recognizer):
    auth = AUTH
    with server(tmp_path / "gallery", recognizer) as client:
        tight = client.post("/api/people/Serena/photos", files=files(photos["people"] / "Serena" / "tight.jpg"),
                            headers=auth)
        whole = client.post("/api/people/Colin/photos", files=files(photos["people"] / "Colin" / "whole.jpg"),
                            headers=auth)
        assert tight.status_code == whole.status_code == 201, (tight.text, whole.text)
        [added] = tight.json()["added"]
        assert added["outside"] > TIGHT_CROP and added["warning"].startswith("face is cut tight (")
        [added] = whole.json()["added"]
        assert added["outside"] < 0.05 and added["warning"] is None

        answer = client.post("/api/identify", files=files(photos["tight"]), headers=auth).json()
        [face] = answer["faces"]
        assert face["name"] == "Serena" and face["outside"] > TIGHT_CROP
        [warning] = answer["warnings"]
        assert warning.startswith("face 1 is cut tight (") and abs(share_in(warning) - 100 * face["outside"]) <= 1
        answer = client.post("/api/identify", files=files(photos["whole"]), headers=auth).json()
        assert answer["faces"][0]["outside"] < 0.05 and answer["warnings"] == []


def test_a_cluster_job_marks_the_faces_cut_tight_and_naming_them_warns(photos, tmp_path, recognizer):
    with server(tmp_path / "gallery", recognizer) as client:
        created = client.post("/api/clusters", files=files(photos["tight"], photos["whole"]), headers=AUTH)
        assert created.status_code == 201, created.text
        job = created.json()
        by_name = {face["name"]: n for n, face in enumerate(job["faces"])}
        tight, whole = job["faces"][by_name["tight.jpg"]], job["faces"][by_name["whole.jpg"]]
        assert tight["outside"] > TIGHT_CROP and tight["warning"].startswith("cut tight (")
        assert whole["outside"] < 0.05 and whole["warning"] is None
        [group] = [g["id"] for g in job["groups"] if by_name["tight.jpg"] in g["faces"]]
        named = client.post(f"/api/clusters/{job['id']}/groups/{group}/name", json={"name": "Serena"},
                            headers=AUTH)
        assert named.status_code == 200, named.text
        # The enrolled crop keeps the photo's edge: the gallery names it cut tight too.
        [added] = named.json()["added"]
        assert added["outside"] > TIGHT_CROP and added["warning"].startswith("face is cut tight (")
