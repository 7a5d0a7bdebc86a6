"""facegnet.compat.face_recognition and its two commands on real photos (LFW, the bundled samples).

face_recognition's API is the contract: the seven functions' names, arguments and defaults, (top, right, bottom,
left) boxes inside the image, and encodings whose Euclidean distance crosses 0.6 exactly at the model card's
calibrated verification threshold.
"""
from __future__ import annotations

import inspect
import io
import math
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import lfw_photo
from PIL import Image

from facegnet.errors import DataError, FacegnetError, ImageError

ASSETS = Path(__file__).resolve().parents[1] / "facegnet" / "assets"
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def fr(recognizer):
    """The compat module, running on the test session's one recognizer."""
    from facegnet.compat import face_recognition

    face_recognition.use_recognizer(recognizer)
    return face_recognition


@pytest.fixture(scope="module")
def photos(fr):
    """Decoded photos: two each of Colin Powell and George W Bush, one of Serena Williams (LFW)."""
    return {
        "powell_1": fr.load_image_file(str(ASSETS / "colin_powell_1.jpg")),
        "powell_2": fr.load_image_file(str(ASSETS / "colin_powell_2.jpg")),
        "bush_1": fr.load_image_file(str(lfw_photo("George_W_Bush", 1))),
        "bush_2": fr.load_image_file(str(lfw_photo("George_W_Bush", 2))),
        "serena_1": fr.load_image_file(str(ASSETS / "serena_williams_1.jpg")),
    }


@pytest.fixture(scope="module")
def encodings(fr, photos):
    return {name: fr.face_encodings(image)[0] for name, image in photos.items()}


# -- the API's shape ---------------------------------------------------------------------------------------------
#: face_recognition 1.3's functions: argument names and defaults (its api.py).
SIGNATURES = {
    "load_image_file": [("file", None), ("mode", "RGB")],
    "face_locations": [("img", None), ("number_of_times_to_upsample", 1), ("model", "hog")],
    "batch_face_locations": [("images", None), ("number_of_times_to_upsample", 1), ("batch_size", 128)],
    "face_landmarks": [("face_image", None), ("face_locations", None), ("model", "large")],
    "face_encodings": [("face_image", None), ("known_face_locations", None), ("num_jitters", 1), ("model", "small")],
    "compare_faces": [("known_face_encodings", None), ("face_encoding_to_check", None), ("tolerance", 0.6)],
    "face_distance": [("face_encodings", None), ("face_to_compare", None)],
}


def test_the_seven_functions_have_face_recognitions_signatures(fr):
    for name, expected in SIGNATURES.items():
        parameters = inspect.signature(getattr(fr, name)).parameters.values()
        got = [(p.name, None if p.default is inspect.Parameter.empty else p.default) for p in parameters]
        assert got == expected, name


def test_load_image_file_rgb_grey_file_object_and_32_bit_png(fr, tmp_path):
    path = lfw_photo("Tony_Blair", 1)
    rgb = fr.load_image_file(str(path))
    assert rgb.shape == (250, 250, 3) and rgb.dtype == np.uint8
    grey = fr.load_image_file(str(path), mode="L")
    assert grey.shape == (250, 250) and grey.dtype == np.uint8
    with open(path, "rb") as handle:
        assert np.array_equal(fr.load_image_file(handle), rgb)
    rgba = tmp_path / "rgba.png"
    Image.fromarray(np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)]), "RGBA").save(rgba)
    assert Image.open(rgba).mode == "RGBA"
    assert np.array_equal(fr.load_image_file(str(rgba)), rgb)  # opaque alpha: the same pixels, alpha dropped


def test_unreadable_files_are_one_clear_error(fr, tmp_path):
    empty, text = tmp_path / "empty.jpg", tmp_path / "notes.jpg"
    empty.write_bytes(b"")
    text.write_text("not a photo")
    for path, reason in ((tmp_path / "missing.jpg", "file not found"), (empty, "empty file"),
                         (text, "not an image")):
        with pytest.raises(ImageError, match=reason) as caught:
            fr.load_image_file(str(path))
        assert str(path) in str(caught.value)
    with pytest.raises(ImageError, match="not an image"):
        fr.load_image_file(io.BytesIO(b"junk"))
    with pytest.raises(ValueError, match="'RGB' or 'L'"):
        fr.load_image_file(str(lfw_photo("Tony_Blair", 1)), mode="CMYK")


# -- locations ---------------------------------------------------------------------------------------------------
def _inside(box, shape) -> bool:
    top, right, bottom, left = box
    return all(isinstance(v, int) for v in box) and 0 <= top < bottom <= shape[0] and 0 <= left < right <= shape[1]


def test_face_locations_are_css_boxes_inside_the_image(fr, photos, recognizer):
    image = photos["powell_1"]
    boxes = fr.face_locations(image)
    assert len(boxes) == 1 and _inside(boxes[0], image.shape)
    top, right, bottom, left = boxes[0]
    floor = round(fr.BASE_MIN_FACE * fr.MTCNN_WIDTH_PER_DLIB_WIDTH / 2)  # upsample 1: 40 px in dlib's measure
    assert floor == 35
    x1, y1, x2, y2 = recognizer.detect(image, min_face_size=floor)[0].box
    assert (left, top, right, bottom) == tuple(round(float(v)) for v in (x1, y1, x2, y2))
    # A face cut by the photo's top-left corner: MTCNN's box reaches outside, the returned one is clipped.
    corner = np.ascontiguousarray(image[top + 20:, left + 20:])
    clipped = fr.face_locations(corner)
    assert clipped and _inside(clipped[0], corner.shape) and clipped[0][0] == 0 and clipped[0][3] == 0


def test_upsampling_sets_the_smallest_face(fr, photos):
    """0 → 80 px, 1 → 40 px, 2 → 20 px as dlib frames a face: 70, 35 and 17 px of MTCNN's narrower box."""
    image = photos["powell_1"]  # MTCNN's box is 87 px wide in the 250-px photo, dlib's about 100
    (top, right, bottom, left), = fr.face_locations(image, number_of_times_to_upsample=0)
    assert 70 <= right - left <= 100
    at_190 = cv2.resize(image, (190, 190), interpolation=cv2.INTER_AREA)  # box ~65 px
    at_125 = cv2.resize(image, (125, 125), interpolation=cv2.INTER_AREA)  # box ~42 px
    at_80 = cv2.resize(image, (80, 80), interpolation=cv2.INTER_AREA)  # box ~27 px
    at_45 = cv2.resize(image, (45, 45), interpolation=cv2.INTER_AREA)  # box ~15 px
    assert [len(fr.face_locations(at_190, n)) for n in (0, 1)] == [0, 1]  # under 70 px: upsample 1 finds it
    assert [len(fr.face_locations(at_125, n)) for n in (0, 1)] == [0, 1]
    assert [len(fr.face_locations(at_80, n)) for n in (1, 2)] == [0, 1]  # under 35 px: upsample 2 finds it
    assert [len(fr.face_locations(at_45, n)) for n in (2, 3)] == [0, 1]  # under 17 px: upsample 3
    assert fr.face_locations(image, model="cnn") == fr.face_locations(image, model="hog")
    with pytest.raises(ValueError, match="'hog', 'cnn'"):
        fr.face_locations(image, model="haar")
    with pytest.raises(ValueError, match="0 or more"):
        fr.face_locations(image, number_of_times_to_upsample=-1)


def test_batch_face_locations_match_single_images(fr, photos):
    images = [photos["powell_1"], photos["bush_1"], np.zeros((250, 250, 3), np.uint8), photos["serena_1"]]
    expected = [fr.face_locations(image) for image in images]
    assert expected[2] == [] and all(len(boxes) == 1 for i, boxes in enumerate(expected) if i != 2)
    assert fr.batch_face_locations(images) == expected
    assert fr.batch_face_locations(images, batch_size=3) == expected


def test_empty_blank_and_tiny_images(fr):
    blank = np.full((200, 300, 3), 255, np.uint8)
    assert fr.face_locations(blank) == [] and fr.face_encodings(blank) == [] and fr.face_landmarks(blank) == []
    assert fr.face_locations(np.zeros((1, 1, 3), np.uint8)) == []
    assert fr.batch_face_locations([]) == []
    with pytest.raises(ImageError, match="not an H×W×3 image"):
        fr.face_locations(np.zeros((0, 0, 3), np.uint8))
    with pytest.raises(ImageError):
        fr.face_encodings(None)


def test_grey_and_rgba_images_find_and_encode_the_same_face(fr, photos, encodings, tmp_path):
    image = photos["powell_2"]
    grey = np.asarray(Image.fromarray(image).convert("L"))
    (box,) = fr.face_locations(image)
    (grey_box,) = fr.face_locations(grey)
    assert max(abs(a - b) for a, b in zip(box, grey_box)) <= 6
    # Colour carries little identity: the grey photo still matches the other colour photo of Powell.
    assert fr.compare_faces([encodings["powell_1"]], fr.face_encodings(grey)[0]) == [True]
    rgba = np.dstack([image, np.full(image.shape[:2], 255, np.uint8)])  # an H×W×4 array, as PNG decoders give
    assert fr.face_locations(rgba) == [box]


# -- encodings and distances ---------------------------------------------------------------------------------------
def test_encodings_are_512_d_and_scaled_to_the_cards_threshold(fr, recognizer, encodings):
    card = recognizer.card
    assert card.threshold == pytest.approx(card.thresholds["flip:fp32"]["threshold"])  # the onnx fp32 procedure
    scale = 0.6 / math.sqrt(2 - 2 * card.threshold)
    assert fr.encoding_scale() == pytest.approx(scale)
    assert fr.tolerance_to_similarity(0.6) == pytest.approx(card.threshold)
    for encoding in encodings.values():
        assert encoding.shape == (512,) and encoding.dtype == np.float64
        assert np.linalg.norm(encoding) == pytest.approx(scale, rel=1e-6)


def test_distance_0_6_is_the_verify_decision(fr, recognizer, photos, encodings):
    """For every pair: face_distance = s·sqrt(2 − 2·cosine), and distance ≤ 0.6 exactly when facegnet verify
    says "same" (cosine ≥ the card's threshold)."""
    names = list(photos)
    floor = round(fr.BASE_MIN_FACE * fr.MTCNN_WIDTH_PER_DLIB_WIDTH / 2)  # face_encodings' search: upsample 1
    unit = {name: recognizer.embed_faces(photos[name], recognizer.detect(photos[name], floor)[:1])[0]
            for name in names}
    decisions = []
    for i, a in enumerate(names):
        distances = fr.face_distance([encodings[b] for b in names], encodings[a])
        for b, distance in zip(names, distances):
            cosine = float(unit[a] @ unit[b])
            if a == b:  # float32 rounding of a cosine of 1 is amplified by the square root
                assert distance == 0.0
                continue
            assert distance == pytest.approx(fr.encoding_scale() * math.sqrt(max(0.0, 2 - 2 * cosine)), abs=1e-5)
            same = cosine >= recognizer.threshold
            assert (distance <= 0.6) == same, (a, b, distance, cosine)
            decisions.append((a.split("_")[0] == b.split("_")[0], same))
    assert all(truth == same for truth, same in decisions)  # and for these photos it is the right answer
    # verify on the files agrees with compare_faces. Its own 40-px search finds the same faces with landmarks up to
    # 2 px apart, which moves this pair's similarity by 0.016 with the shipped weights (84c59ce8…).
    result = recognizer.verify(ASSETS / "colin_powell_1.jpg", ASSETS / "colin_powell_2.jpg")
    assert result.similarity == pytest.approx(float(unit["powell_1"] @ unit["powell_2"]), abs=0.03)
    assert [result.same] == fr.compare_faces([encodings["powell_1"]], encodings["powell_2"]) == [True]


def test_lower_tolerance_is_stricter(fr, encodings):
    known = [encodings[name] for name in ("powell_2", "bush_1", "bush_2", "serena_1")]
    probe = encodings["powell_1"]
    distances = fr.face_distance(known, probe)
    previous = None
    for tolerance in (0.8, 0.6, 0.5, 0.4, 0.2):
        matches = fr.compare_faces(known, probe, tolerance=tolerance)
        assert matches == [bool(d <= tolerance) for d in distances]
        if previous is not None:
            assert all(p or not m for p, m in zip(previous, matches))  # nothing new matches when stricter
        previous = matches
    assert fr.compare_faces(known, probe, tolerance=0.6) == [True, False, False, False]
    assert not any(fr.compare_faces(known, probe, tolerance=0.2))


def test_dlib_encodings_are_refused_in_one_line(fr, encodings):
    dlib_like = np.random.default_rng(0).normal(0, 0.1, 128)
    with pytest.raises(ValueError, match=r"shape \(128,\).*512-d.*dlib") as caught:
        fr.face_distance([encodings["powell_1"]], dlib_like)
    assert isinstance(caught.value, FacegnetError) and "\n" not in str(caught.value)
    with pytest.raises(DataError, match=r"shape \(2, 128\)"):
        fr.compare_faces([dlib_like, dlib_like], encodings["powell_1"])
    assert fr.face_distance([], encodings["powell_1"]).shape == (0,)
    as_row = fr.face_distance([encodings["powell_2"]], encodings["powell_1"][None])  # a (1, 512) probe, as before
    assert np.array_equal(as_row, fr.face_distance([encodings["powell_2"]], encodings["powell_1"]))
    assert fr.compare_faces([], encodings["powell_1"]) == []


def test_boxes_from_another_source_are_aligned_inside_the_box(fr, photos, encodings):
    image = photos["powell_1"]
    (box,) = fr.face_locations(image)
    # face_locations' own box gives back MTCNN's landmarks: the same encoding as face_encodings(image).
    assert np.array_equal(fr.face_encodings(image, [box])[0], encodings["powell_1"])
    top, right, bottom, left = box
    # A tighter, lower box, as dlib's HOG detector draws it, and a looser one: O-Net finds the landmarks inside.
    width = right - left
    for other in [(top + width // 6, right - width // 10, bottom + width // 10, left + width // 10),
                  (top - 12, right + 15, bottom + 10, left - 15)]:
        (encoding,) = fr.face_encodings(image, [other])
        assert np.linalg.norm(encoding - encodings["powell_1"]) < 0.25
        assert fr.compare_faces([encodings["powell_2"], encodings["bush_1"]], encoding) == [True, False]
    with pytest.raises(ValueError, match="top, right, bottom, left"):
        fr.face_encodings(image, [(1, 2, 3)])


def test_num_jitters_averages_repeatable_jittered_crops(fr, photos, encodings):
    image = photos["powell_1"]
    first = fr.face_encodings(image, num_jitters=4)[0]
    assert np.array_equal(first, fr.face_encodings(image, num_jitters=4)[0])  # repeatable
    assert 0.0 < np.linalg.norm(first - encodings["powell_1"]) < 0.15
    assert np.linalg.norm(first) == pytest.approx(fr.encoding_scale())
    assert fr.compare_faces([encodings["powell_2"], encodings["bush_1"]], first) == [True, False]
    assert np.array_equal(fr.face_encodings(image, num_jitters=1, model="large")[0], encodings["powell_1"])


def test_landmarks_under_face_recognitions_names(fr, photos):
    image = photos["bush_1"]
    (box,) = fr.face_locations(image)
    (large,) = fr.face_landmarks(image)
    (small,) = fr.face_landmarks(image, model="small")
    assert set(large) == {"left_eye", "right_eye", "nose_tip", "top_lip", "bottom_lip"}
    assert set(small) == {"left_eye", "right_eye", "nose_tip"}
    assert small == {key: large[key] for key in small}
    top, right, bottom, left = box
    for points in large.values():
        assert all(isinstance(x, int) and isinstance(y, int) and left <= x <= right and top <= y <= bottom
                   for x, y in points)
    (left_eye,), (right_eye,), (nose,) = large["left_eye"], large["right_eye"], large["nose_tip"]
    assert left_eye[0] < nose[0] < right_eye[0] and max(left_eye[1], right_eye[1]) < nose[1]
    assert large["top_lip"] == large["bottom_lip"][::-1] and large["top_lip"][0][1] > nose[1]
    (boxed,) = fr.face_landmarks(image, [box])
    assert boxed == large
    with pytest.raises(ValueError, match="'large', 'small'"):
        fr.face_landmarks(image, model="medium")


# -- the commands ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """KNOWN: Powell and Bush, one photo each. UNKNOWN: their other photos, Serena Williams, a blank photo."""
    root = tmp_path_factory.mktemp("compat-cli")
    known, unknown = root / "known", root / "unknown"
    known.mkdir()
    unknown.mkdir()
    (known / "colin_powell.jpg").write_bytes((ASSETS / "colin_powell_1.jpg").read_bytes())
    (known / "george_w_bush.jpg").write_bytes(lfw_photo("George_W_Bush", 1).read_bytes())
    (unknown / "a.jpg").write_bytes((ASSETS / "colin_powell_2.jpg").read_bytes())
    (unknown / "b.jpg").write_bytes(lfw_photo("George_W_Bush", 2).read_bytes())
    (unknown / "c.jpg").write_bytes((ASSETS / "serena_williams_1.jpg").read_bytes())
    Image.new("RGB", (120, 90), "white").save(unknown / "d.png")
    (unknown / "notes.txt").write_text("not a photo, and not read: the commands read .jpg, .jpeg and .png")
    return known, unknown


def test_face_recognition_command_prints_face_recognitions_lines(fr, folders, capsys):
    from facegnet.compat.face_recognition_cli import main

    known, unknown = folders
    assert main([str(known), str(unknown)]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"{unknown}/a.jpg,colin_powell", f"{unknown}/b.jpg,george_w_bush", f"{unknown}/c.jpg,unknown_person",
        f"{unknown}/d.png,no_persons_found"]
    assert main(["--show-distance", "true", "--tolerance", "0.55", str(known), str(unknown / "a.jpg")]) == 0
    path, name, distance = capsys.readouterr().out.strip().split(",")
    assert (path, name) == (f"{unknown}/a.jpg", "colin_powell") and 0.0 < float(distance) <= 0.55
    assert main(["--show-distance", "yes", "--tolerance", "0.1", str(known), str(unknown / "c.jpg")]) == 0
    assert capsys.readouterr().out == f"{unknown}/c.jpg,unknown_person,None\n"


def test_face_recognition_command_bad_input_is_one_line(fr, folders, capsys, tmp_path):
    from facegnet.compat.face_recognition_cli import main

    known, unknown = folders
    assert main([str(tmp_path / "nobody"), str(unknown)]) != 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nobody: no such folder" in err and "Traceback" not in err
    assert main([str(known), str(tmp_path / "missing.jpg")]) == 2
    assert "missing.jpg: no such file or folder" in capsys.readouterr().err
    # One broken photo among good ones: its line on stderr, the others still checked, a non-zero exit.
    broken = tmp_path / "unknown"
    broken.mkdir()
    (broken / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    (broken / "good.jpg").write_bytes((ASSETS / "colin_powell_2.jpg").read_bytes())
    assert main([str(known), str(broken)]) == 2
    out, err = capsys.readouterr()
    assert out == f"{broken}/good.jpg,colin_powell\n"
    assert err.count("\n") == 1 and f"{broken}/broken.jpg" in err
    with pytest.raises(SystemExit) as exited:
        main(["--show-distance", "maybe", str(known), str(unknown)])
    assert exited.value.code == 2 and "not a boolean" in capsys.readouterr().err


def test_face_detection_command_prints_boxes(fr, folders, capsys):
    from facegnet.compat.face_detection_cli import main

    _, unknown = folders
    assert main([str(unknown)]) == 0
    lines = capsys.readouterr().out.splitlines()
    expected = []
    for name in ("a.jpg", "b.jpg", "c.jpg", "d.png"):
        image = fr.load_image_file(str(unknown / name))
        expected += [f"{unknown}/{name},{t},{r},{b},{l}" for t, r, b, l in fr.face_locations(image, 0)]
    assert lines == expected and len(lines) == 3  # face_detection's default: upsample 0, no line for d.png
    assert main(["--upsample", "1", "--model", "cnn", str(unknown / "a.jpg")]) == 0
    assert capsys.readouterr().out.count(",") == 4


@pytest.mark.slow
def test_cpus_runs_worker_processes_with_the_same_lines(fr, folders, capsys):
    """--cpus 2: two worker processes (each loads its own networks), lines still in the folder's order."""
    from facegnet.compat.face_detection_cli import main

    _, unknown = folders
    assert main([str(unknown)]) == 0
    one = capsys.readouterr().out
    assert main(["--cpus", "2", str(unknown)]) == 0
    assert capsys.readouterr().out == one and one.count("\n") == 3


def test_console_scripts_are_installed_and_fail_in_one_line(folders, tmp_path):
    """The installed commands themselves: one photo through a fresh process, and bad input without a traceback."""
    _, unknown = folders
    done = subprocess.run([str(BIN / "facegnet-face-detection"), str(unknown / "b.jpg")], capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    path, *box = done.stdout.strip().split(",")
    assert path == f"{unknown}/b.jpg" and len(box) == 4 and all(v.isdigit() for v in box)
    for command in (["facegnet-face-detection", str(tmp_path / "absent")],
                    ["facegnet-face-recognition", str(tmp_path / "absent"), str(unknown)]):
        failed = subprocess.run([str(BIN / command[0]), *command[1:]], capture_output=True, text=True, timeout=120,
                                check=False)
        assert failed.returncode != 0 and failed.stdout == ""
        assert failed.stderr.count("\n") == 1 and "absent" in failed.stderr and "Traceback" not in failed.stderr
