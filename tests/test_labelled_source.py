"""A labelled source of tight crops (IMFDB's layout: <Actor>/<Movie>/images/*.jpg) prepared as training identities,
with LFW's people refused by name and by face: the name screen on IMFDB's real tricky names, the pad+upscale path on
a small real crop, and the whole preparation on a tiny set built from real LFW photos and training-pack faces."""
from __future__ import annotations

import csv
import json
import shutil
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import LFW, ROOT, SHARED, lfw_photo
from facegnet.errors import DataError
from facegnet.train.lfw_screen import NameScreen, dev_threshold, lfw_people, name_words

PACK = SHARED / "data" / "train"
TEACHER = SHARED / "models" / "face-reidentification-retail-0095"


# ------------------------------------------------------------------------------------------------ by name
def test_name_words_split_camelcase_and_fold_case_diacritics_and_punctuation() -> None:
    assert name_words("SalmanKhan") == ["salman", "khan"]
    assert name_words("Dr.Rajkumar") == ["dr", "rajkumar"]
    assert name_words("K.Viswanath") == ["k", "viswanath"]
    assert name_words("NTR") == ["ntr"]
    assert name_words("JoséMaríaAznar") == ["jose", "maria", "aznar"]
    assert name_words("George_W_Bush") == name_words("george w  bush") == ["george", "w", "bush"]


def test_name_screen_on_imfdb_spellings_against_lfw_names() -> None:
    screen = NameScreen(["Salman_Khan", "Hrithik_Roshan", "Kareena_Kapoor", "Rani_Mukherjee", "Jose_Maria_Aznar",
                         "Imran_Khan"])
    assert screen.match("SalmanKhan") == "Salman_Khan"
    assert screen.match("HrithikRoshan") == "Hrithik_Roshan"
    assert screen.match("KAREENAKAPOOR") == "Kareena_Kapoor"
    assert screen.match("KhanSalman") == "Salman_Khan"  # family name first
    assert screen.match("JoséMaríaAznar") == "Jose_Maria_Aznar"
    # IMFDB's own spelling of LFW's Rani_Mukherjee: no name comparison catches it (the face screen does)
    assert screen.match("Ranimukherji") is None
    # sharing a word is not a match
    assert screen.match("AamairKhan") is None and screen.match("SharukhKhan") is None


@pytest.mark.skipif(not (LFW / "images").is_dir(), reason="LFW not present in ../shared")
def test_name_screen_with_lfws_real_people_list() -> None:
    people = lfw_people(LFW)
    assert len(people) == 5749
    screen = NameScreen(people)
    imfdb = ["SalmanKhan", "HrithikRoshan", "KareenaKapoor", "Ranimukherji", "AamairKhan", "AmitabhBachchan",
             "Dr.Rajkumar", "SharukhKhan", "Mohanlal", "NTR"]
    assert {n: screen.match(n) for n in imfdb if screen.match(n)} == {
        "SalmanKhan": "Salman_Khan", "HrithikRoshan": "Hrithik_Roshan", "KareenaKapoor": "Kareena_Kapoor"}


# ------------------------------------------------------------------------------------------------ by face
def test_dev_threshold_is_the_highest_impostor_score() -> None:
    rng = np.random.default_rng(0)
    centres = np.eye(4, 16)
    x = np.repeat(centres, 5, axis=0) + 0.3 * rng.standard_normal((20, 16))
    labels = np.repeat(np.arange(4), 5)
    t = dev_threshold(x, labels)
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    means = np.stack([unit[labels == i].sum(0) for i in range(4)])
    means /= np.linalg.norm(means, axis=1, keepdims=True)
    scores = unit @ means.T
    assert t.value == pytest.approx(scores[labels[:, None] != np.arange(4)].max(), abs=1e-5)
    assert t.impostor_comparisons == 60 and t.dev_identities == 4 and 0.5 < t.genuine_above <= 1.0
    with pytest.raises(DataError, match="two dev identities"):
        dev_threshold(x[:5], labels[:5])


# ------------------------------------------------------------------------------------------------ tight crops
def _tight_crop(photo: Path, width: int) -> tuple[np.ndarray, np.ndarray]:
    """The MTCNN box of an LFW photo cut out and shrunk to ``width`` px (as small as IMFDB's crops) and the
    photo's landmarks in that crop's pixels."""
    from facegnet.detection.detector import Detector
    from facegnet.io import load_image

    image = load_image(photo)
    face = max(Detector(min_face_size=40).detect(image), key=lambda f: f.area)
    x1, y1, x2, y2 = (round(float(v)) for v in face.box)
    x1, y1 = max(0, x1), max(0, y1)
    tight = image[y1:y2, x1:x2]
    scale = width / tight.shape[1]
    small = cv2.resize(tight, (width, round(tight.shape[0] * scale)), interpolation=cv2.INTER_AREA)
    return small, (face.landmarks - [x1, y1]) * scale


def test_pad_and_upscale_finds_the_face_of_a_small_tight_crop_in_its_own_pixels() -> None:
    from facegnet.train.tight_crops import SIDE, align_tight, detect_tight, pad_and_upscale, tight_crop_detector

    crop, landmarks = _tight_crop(lfw_photo("Colin_Powell", 1), 40)
    canvas = pad_and_upscale(crop)
    assert canvas.image.shape == (SIDE, SIDE, 3) and canvas.scale > 2  # a 40 px crop is upscaled
    detector = tight_crop_detector()
    face, = detect_tight(detector, [crop])
    assert face is not None
    # mapped back to the 40 px crop, the landmarks agree with the full photo's within a tenth of the crop
    assert np.abs(face.landmarks - landmarks).max() < 0.1 * crop.shape[1]
    aligned = align_tight(crop, face)
    assert aligned.shape == (112, 112, 3) and aligned.mean() > 20
    # a crop with no face is lost, not an error
    blank = np.full((50, 40, 3), 128, np.uint8)
    assert detect_tight(detector, [blank, crop])[0] is None


# ------------------------------------------------------------------------------------------------ end to end
needs_shared = pytest.mark.skipif(
    not ((PACK / "manifest.csv").exists() and (TEACHER / "face-reidentification-retail-0095.xml").exists()
         and (LFW / "images").is_dir()),
    reason="../shared's LFW, training pack and online teacher are needed")


def _write(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> tuple[Path, object, str]:
    """A tiny IMFDB-like source, LFW and pack, all real photos, and the folder prepared from them."""
    pytest.importorskip("openvino")
    if not ((PACK / "manifest.csv").exists() and TEACHER.exists() and (LFW / "images").is_dir()):
        pytest.skip("../shared's LFW, training pack and online teacher are needed")
    from facegnet.train.datasets import read_manifest
    from facegnet.train.labelled_source import prepare_labelled

    root = tmp_path_factory.mktemp("labelled")
    # LFW: a few real people, one of them an actor the source also holds under another spelling
    for name, count in (("Colin_Powell", 3), ("Tony_Blair", 2), ("Salman_Khan", 1)):
        for n in range(1, count + 1):
            (root / "lfw" / "images" / name).mkdir(parents=True, exist_ok=True)
            shutil.copy(lfw_photo(name, n), root / "lfw" / "images" / name)
    # the pack: the dev faces of eight identities (the threshold's statistics)
    rows = [r for r in read_manifest(PACK) if r["split"] == "dev"]
    ids = sorted({r["identity"] for r in rows}, key=int)
    dev = [r for r in rows if r["identity"] in ids[:8]]
    dev = [r for i in ids[:8] for r in [x for x in dev if x["identity"] == i][:4]]
    for r in dev:
        (root / "pack" / Path(r["crop"]).parent).mkdir(parents=True, exist_ok=True)
        shutil.copy(PACK / r["crop"], root / "pack" / r["crop"])
    with open(root / "pack" / "manifest.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["crop", "identity", "split"])
        writer.writeheader()
        writer.writerows({k: r[k] for k in ("crop", "identity", "split")} for r in dev)
    # the source: <Actor>/<Movie>/images/<Actor>_<k>.jpg, tight small crops
    src = root / "IMFDB_final"
    for k, n in enumerate(range(4, 8)):  # Colin Powell's other photos, under a name no screen knows
        _write(src / "GeneralC" / ("MovieA" if k < 2 else "MovieB") / "images" / f"GeneralC_{k % 2}.jpg",
               _tight_crop(lfw_photo("Colin_Powell", n), 48)[0])
    _write(src / "SalmanKhan" / "Dabang2" / "images" / "SalmanKhan_1.jpg",
           _tight_crop(lfw_photo("Salman_Khan", 1), 48)[0])
    others = [r for r in read_manifest(PACK) if r["split"] == "train"]
    counts = Counter(r["identity"] for r in others)
    several = [i for i in dict.fromkeys(r["identity"] for r in others) if counts[i] >= 3]
    for actor, identity in (("PackOne", several[0]), ("PackTwo", several[-1])):
        faces = [r["crop"] for r in others if r["identity"] == identity][:3]
        for k, crop in enumerate(faces):
            image = cv2.cvtColor(cv2.imread(str(PACK / crop)), cv2.COLOR_BGR2RGB)
            _write(src / actor / f"Movie{k % 2}" / "images" / f"{actor}_{k // 2}.jpg", image[16:104, 20:92])
    _write(src / "PackOne" / "Movie0" / "images" / "PackOne_9.jpg", np.full((50, 40, 3), 128, np.uint8))
    log = root / "console.txt"
    with open(log, "w") as handle:
        summary = prepare_labelled(src, root / "out", root / "lfw", TEACHER, root / "pack", log=handle,
                                   source={"name": "tiny"})
    return root, summary, log.read_text()


@needs_shared
def test_lfw_people_are_refused_by_name_and_by_face_and_listed(prepared) -> None:
    root, summary, console = prepared
    refused = {r["identity"]: r for r in summary.refused}
    assert set(refused) == {"SalmanKhan", "GeneralC"}
    assert refused["SalmanKhan"]["reason"] == "name" and refused["SalmanKhan"]["lfw_name"] == "Salman_Khan"
    assert refused["GeneralC"]["reason"] == "face" and refused["GeneralC"]["lfw_name"] == "Colin_Powell"
    assert refused["GeneralC"]["similarity"] > summary.threshold["value"]
    assert "SalmanKhan: refused, its name matches LFW's Salman_Khan" in console
    assert "GeneralC: refused, its faces match LFW's Colin_Powell" in console
    record = json.loads((root / "out" / "screen.json").read_text())
    assert [r["identity"] for r in record["refused"]] == ["GeneralC", "SalmanKhan"]
    assert record["threshold"]["dev_identities"] == 8 and record["threshold"]["dev_faces"] == 32
    assert record["identities"]["GeneralC"]["status"] == "refused"
    for kept in ("PackOne", "PackTwo"):  # kept: their nearest LFW person is below the threshold
        assert record["identities"][kept]["status"] == "kept"
        assert record["identities"][kept]["similarity"] <= summary.threshold["value"]
    # a refused actor's faces are gone from the folder; a name-refused one was never read
    assert not (root / "out" / "GeneralC").exists() and not (root / "out" / "SalmanKhan").exists()
    assert "SalmanKhan" not in (root / "out" / "identities.csv").read_text()


@needs_shared
def test_kept_actors_are_labelled_identities_for_training_and_lost_faces_are_counted(prepared) -> None:
    from facegnet.train.datasets import load_prepared

    root, summary, _ = prepared
    faces = load_prepared(root / "out")
    assert faces.identities == ["PackOne", "PackTwo"] and len(faces) == summary.faces == 6
    assert (faces.labels >= 0).all() and faces.images.shape == (6, 112, 112, 3)
    # the same file name in two movies gives two crops
    assert {"Movie0__images__PackOne_0.png", "Movie1__images__PackOne_0.png"} <= {
        Path(p).name for p in faces.paths}
    assert summary.lost == 1 and summary.photos_read == 7
    with open(root / "out" / "report.csv", newline="") as handle:
        report = list(csv.DictReader(handle))
    assert [(r["source"], r["reason"]) for r in report] == [
        ("PackOne/Movie0/images/PackOne_9.jpg", "no face found on the padded, upscaled 40x50 crop")]


@needs_shared
def test_a_second_run_resumes_without_redoing_an_actor(prepared) -> None:
    from facegnet.train.labelled_source import prepare_labelled

    root, summary, _ = prepared
    before = (root / "out" / "identities.csv").read_text()
    with open(root / "again.txt", "w") as handle:
        again = prepare_labelled(root / "IMFDB_final", root / "out", root / "lfw", TEACHER, root / "pack",
                                 log=handle)
    assert (root / "out" / "identities.csv").read_text() == before and again.ms_per_photo is None
    assert (again.faces, again.refused) == (summary.faces, summary.refused)
    with pytest.raises(DataError, match="no identity folder 'Nobody'"):
        prepare_labelled(root / "IMFDB_final", root / "out", root / "lfw", TEACHER, root / "pack",
                         identities=["Nobody"])


@needs_shared
def test_the_sources_command_prepares_a_labelled_snapshot_as_identities(prepared, tmp_path: Path, monkeypatch,
                                                                       capsys: pytest.CaptureFixture) -> None:
    """``python -m facegnet.train.sources`` on a local repository standing in for the IMFDB snapshot; names given
    with ``--exclude-names`` are refused by name too, and a refusal skips the actor, never the run."""
    import subprocess

    from facegnet.train import sources

    root = prepared[0]
    repo = tmp_path / "repo"
    for actor in ("PackOne", "PackTwo"):
        shutil.copytree(root / "IMFDB_final" / actor, repo / "IMFDB_final" / actor)
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "faces"], check=True)
    commit = subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()
    monkeypatch.setitem(sources.SOURCES, "tiny", sources.Source("tiny", "x/y", commit, "IMFDB_final", "test", 7,
                                                               labelled=True))
    (tmp_path / "names.txt").write_text("Pack_One\n")
    code = sources.main(["--snapshot", f"tiny={repo / '.git'}", "--out", str(tmp_path / "out"), "--lfw",
                         str(root / "lfw"), "--pack", str(root / "pack"), "--teacher-model", str(TEACHER),
                         "--exclude-names", str(tmp_path / "names.txt")])
    out, err = capsys.readouterr()
    assert code == 0, err
    summary = json.loads(out)["tiny"]
    assert [(r["identity"], r["reason"], r["lfw_name"]) for r in summary["refused"]] == [
        ("PackOne", "name", "pack one")]
    assert "PackOne: refused, its name matches" in err
    assert (summary["identities_kept"], summary["faces"], summary["licence"]) == (1, 3, "test")


# ------------------------------------------------------------------------------------------------ the recipe
def test_the_imfdb_recipe_is_the_shipped_one_plus_the_prepared_folder(capsys: pytest.CaptureFixture) -> None:
    from facegnet.cli import main
    from facegnet.train.config import TrainConfig
    from facegnet.train.release import licence_of
    from facegnet.train.sources import SOURCES

    def resolved(name: str) -> dict:
        assert main(["train", "--config", str(ROOT / "recipes" / name), "--dry-run"]) == 0
        return json.loads(capsys.readouterr().out)

    base, imfdb = resolved("facegnet-default.toml"), resolved("ablation-imfdb.toml")
    assert {k for k in base if base[k] != imfdb[k]} == {"extra_data", "out"}
    assert Path(imfdb["extra_data"]).name == "imfdb" and SOURCES["imfdb"].labelled
    licence = licence_of(TrainConfig.from_dict({**imfdb, "init": None}))
    assert "imfdb (rmn8/Image-recognition-to-detect-expression@4bd6eb7891): research use (IMFDB, from an " \
           "unofficial mirror)" in licence
