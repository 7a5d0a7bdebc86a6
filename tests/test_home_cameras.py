"""Home-camera clients against a real ``facegnet serve``: Double Take's CompreFace and DeepStack detectors.

The requests replay what Double Take's detector code sends (jakowenko/double-take at commit
8e2728d283b3901d688c2454086fd0b512739b53, ``api/src/util/detectors/compreface.js`` and ``deepstack.js``): the
same URLs and query strings (including the literal ``face_plugins=undefined`` it writes when no plugin is
configured), the ``x-api-key`` header or ``api_key`` form field, the form field names and order, and a
multipart body streamed without a length, as axios sends a file stream. The answers are then read the way Double
Take reads them (its ``normalize`` and ``checks`` logic, rewritten here) with its default settings: a match at
60 or more with a box of at least 10,000 px², unknown below 40. Probes are LFW photos scaled to 500 px high, the
height of the snapshots Double Take asks Frigate for.
"""
from __future__ import annotations

import io
import random
import time
from decimal import ROUND_HALF_UP, Decimal
from itertools import pairwise

import numpy as np
import pytest
from conftest import lfw_photo
from PIL import Image
from servers import start_server, stop_servers, wait_healthy

pytest.importorskip("fastapi", reason="the server extra is not installed: pip install 'facegnet[server]'")
httpx = pytest.importorskip("httpx", reason="httpx is in the test extra: pip install -e '.[test]'")

from facegnet.server.scores import MATCH_SCORE, MIN_BAND, UNKNOWN_SCORE, anchors, client_score  # noqa: E402

TOKEN = "home-cameras-token-0123"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
# Double Take's defaults (detect.match / detect.unknown, and the CompreFace detector's det_prob_threshold).
MATCH = {"confidence": 60, "min_area": 10000}
UNKNOWN = {"confidence": 40, "min_area": 0}
DET_PROB_THRESHOLD = 0.8
# Enrolled with photos 1 and 2, probed with photo 3; each set through one of the two APIs.
COMPREFACE_PEOPLE = ["Colin_Powell", "Serena_Williams", "Hugo_Chavez"]
DEEPSTACK_PEOPLE = ["Donald_Rumsfeld", "Vladimir_Putin", "Jacques_Chirac"]
STRANGERS = ["George_W_Bush", "Tiger_Woods", "Andre_Agassi"]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``facegnet serve`` on a free port with an empty gallery; yields its base URL."""
    gallery = tmp_path_factory.mktemp("home") / "gallery"
    process, url = start_server("--gallery", str(gallery), "--token", TOKEN, "--workers", "1")
    try:
        wait_healthy(process, url, time.monotonic() + 180)
        yield url
    finally:
        stop_servers([process])  # the server we started, and only it


# ---------------------------------------------------------------------------------------------- the client side
def snapshot(name: str, number: int) -> tuple[str, bytes]:
    """An LFW photo as a 500 px high JPEG snapshot (file name, bytes)."""
    image = Image.open(lfw_photo(name, number)).convert("RGB").resize((500, 500), Image.BICUBIC)
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=90)
    return f"{name}_{number:04d}.jpg", out.getvalue()


def photo(name: str, number: int) -> tuple[str, bytes]:
    path = lfw_photo(name, number)
    return path.name, path.read_bytes()


def no_face() -> tuple[str, bytes]:
    out = io.BytesIO()
    Image.fromarray(np.full((500, 500, 3), (90, 120, 90), np.uint8)).save(out, format="JPEG")
    return "driveway.jpg", out.getvalue()


def form_data(parts: list[tuple[str, object]]) -> tuple[dict[str, str], object]:
    """A multipart body as Node's form-data package builds it (boundary of 26 dashes and 24 digits; a file part
    with its name and a type from its extension), handed over as a stream without a length, as axios does."""
    boundary = "-" * 26 + "".join(random.choice("0123456789") for _ in range(24))
    chunks = []
    for field, value in parts:
        if isinstance(value, tuple):
            filename, data = value
            head = (f'Content-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
                    "Content-Type: image/jpeg\r\n\r\n")
        else:
            head, data = f'Content-Disposition: form-data; name="{field}"\r\n\r\n', str(value).encode()
        chunks.append(f"--{boundary}\r\n{head}".encode() + data + b"\r\n")
    chunks.append(f"--{boundary}--\r\n".encode())
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}",
               "Accept": "application/json, text/plain, */*", "User-Agent": "axios/0.26.1"}
    return headers, iter(chunks)


def js_percent(value: float) -> float:
    """``parseFloat((value * 100).toFixed(2))``: JavaScript rounds the double's exact value half up."""
    return float(Decimal(value * 100).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))


def checks(name: str, confidence: float, box: dict) -> list[str] | bool:
    """Double Take's checks on one face: False drops it, otherwise the reasons it is not a match."""
    area = box["width"] * box["height"]
    if name == "unknown" and area < UNKNOWN["min_area"]:
        return False
    reasons = []
    if name == "unknown" and confidence < UNKNOWN["confidence"]:
        reasons.append("confidence too low")
    else:
        if confidence < MATCH["confidence"]:
            reasons.append("confidence too low")
        if area < MATCH["min_area"]:
            reasons.append("box area too low")
    return reasons


def read_faces(faces: list[tuple[str | None, float, dict, bool]]) -> list[dict]:
    """The common end of Double Take's normalize: name (lower case, or 'unknown' under 40), match, checks."""
    out = []
    for subject, confidence, corners, can_match in faces:
        box = {"top": corners["y_min"], "left": corners["x_min"], "width": corners["x_max"] - corners["x_min"],
               "height": corners["y_max"] - corners["y_min"]}
        name = subject.lower() if subject is not None and confidence >= UNKNOWN["confidence"] else "unknown"
        big_enough = box["width"] * box["height"] >= MATCH["min_area"]
        face = {"name": name, "confidence": confidence, "box": box,
                "match": can_match and confidence >= MATCH["confidence"] and big_enough}
        verdict = checks(name, confidence, box)
        if verdict is False:
            continue
        out.append({**face, "checks": verdict})
    return out


def normalize_compreface(data: dict) -> list[dict]:
    if "result" not in data:
        if data.get("code") == 28:
            return []
        raise RuntimeError(data.get("message"))
    faces = []
    for item in data["result"]:
        best = item["subjects"][0] if item["subjects"] else None
        confidence = js_percent(best["similarity"]) if best else 0.0
        faces.append((best["subject"] if best else None, confidence, item["box"], True))
    return read_faces(faces)


def normalize_deepstack(data: dict) -> list[dict]:
    if not data.get("success"):
        return []
    return read_faces([(p["userid"], js_percent(p["confidence"]), p, p["userid"] != "unknown")
                       for p in data["predictions"]])


class CompreFace:
    """Double Take's CompreFace detector: recognize, train, remove."""

    def __init__(self, url: str, key: str = TOKEN, face_plugins: str | None = None) -> None:
        self.url, self.key = url, key
        self.face_plugins = "undefined" if face_plugins is None else face_plugins  # a JS template of an unset value

    def recognize(self, file: tuple[str, bytes]) -> httpx.Response:
        headers, body = form_data([("file", file)])
        return httpx.post(f"{self.url}/api/v1/recognition/recognize?face_plugins={self.face_plugins}"
                          f"&det_prob_threshold={DET_PROB_THRESHOLD}", headers={**headers, "x-api-key": self.key},
                          content=body, timeout=60)

    def train(self, name: str, file: tuple[str, bytes]) -> httpx.Response:
        headers, body = form_data([("file", file)])
        return httpx.post(f"{self.url}/api/v1/recognition/faces?subject={name}",
                          headers={**headers, "x-api-key": self.key}, content=body, timeout=60)

    def remove(self, name: str) -> httpx.Response:
        return httpx.delete(f"{self.url}/api/v1/recognition/faces?subject={name}",
                            headers={"x-api-key": self.key, "Accept": "application/json, text/plain, */*"}, timeout=60)


class DeepStack:
    """Double Take's DeepStack detector: recognize, train, remove (api_key when a key is configured)."""

    def __init__(self, url: str, key: str | None = TOKEN) -> None:
        self.url, self.key = url, key

    def _post(self, path: str, parts: list[tuple[str, object]]) -> httpx.Response:
        if self.key:
            parts = [*parts, ("api_key", self.key)]
        headers, body = form_data(parts)
        return httpx.post(f"{self.url}/v1/vision/face/{path}", headers=headers, content=body, timeout=60)

    def recognize(self, file: tuple[str, bytes]) -> httpx.Response:
        return self._post("recognize", [("image", file)])

    def train(self, name: str, file: tuple[str, bytes]) -> httpx.Response:
        return self._post("register", [("image", file), ("userid", name)])

    def remove(self, name: str) -> httpx.Response:
        return self._post("delete", [("userid", name)])


def facegnet_says(url: str, file: tuple[str, bytes]) -> str:
    """facegnet's own decision for the photo's face (its /api/identify, the calibrated threshold)."""
    answer = httpx.post(f"{url}/api/identify", files={"file": (file[0], file[1], "image/jpeg")}, headers=BEARER,
                        timeout=60).json()
    return answer["faces"][0]["name"]


# ---------------------------------------------------------------------------------------------- Double Take
@pytest.mark.slow
def test_double_take_compreface_detector(server):
    detector = CompreFace(server)
    for person in COMPREFACE_PEOPLE:  # Double Take's train: one request per photo; axios insists on a 2xx
        for number in (1, 2):
            response = detector.train(person, photo(person, number))
            assert response.status_code == 201, response.text
            assert response.json()["subject"] == person and response.json()["image_id"].isdigit()
    listed = httpx.get(f"{server}/api/v1/recognition/faces", headers={"x-api-key": TOKEN}).json()
    assert sorted({f["subject"] for f in listed["faces"]} & set(COMPREFACE_PEOPLE)) == sorted(COMPREFACE_PEOPLE)

    for person in COMPREFACE_PEOPLE:  # the third photo of each: a match under Double Take's defaults
        probe = snapshot(person, 3)
        response = detector.recognize(probe)
        assert response.status_code == 200, response.text
        [face] = normalize_compreface(response.json())
        assert face["name"] == person.lower() and face["match"] is True and face["checks"] == [], face
        assert facegnet_says(server, probe) == person  # the same decision as facegnet's own threshold
    for stranger in STRANGERS:  # nobody enrolled: unknown, not a match
        probe = snapshot(stranger, 3)
        [face] = normalize_compreface(detector.recognize(probe).json())
        assert face["name"] == "unknown" and face["match"] is False and face["confidence"] < 40, face
        assert facegnet_says(server, probe) == "unknown"

    # A snapshot without a face: CompreFace's code 28, which Double Take reads as no faces (not an error).
    response = detector.recognize(no_face())
    assert response.status_code == 400
    assert response.json() == {"code": 28, "message": "No face is found in the given image"}
    assert normalize_compreface(response.json()) == []

    for person in COMPREFACE_PEOPLE:  # Double Take's remove; a second remove finds nothing and is no error
        assert detector.remove(person).json() == {"deleted": 2}
        assert detector.remove(person).json() == {"deleted": 0}
    for face in normalize_compreface(detector.recognize(snapshot(COMPREFACE_PEOPLE[0], 3)).json()):
        assert face["match"] is False and face["name"] != COMPREFACE_PEOPLE[0].lower()


@pytest.mark.slow
def test_double_take_deepstack_detector(server):
    detector = DeepStack(server)
    for person in DEEPSTACK_PEOPLE:
        for number in (1, 2):
            response = detector.train(person, photo(person, number))
            assert response.status_code == 200 and response.json() == {"success": True, "message": "face added"}
    listed = httpx.post(f"{server}/v1/vision/face/list", data={"api_key": TOKEN}).json()
    assert listed["success"] and set(DEEPSTACK_PEOPLE) <= set(listed["faces"])

    for person in DEEPSTACK_PEOPLE:
        probe = snapshot(person, 3)
        response = detector.recognize(probe)
        assert response.status_code == 200, response.text
        [face] = normalize_deepstack(response.json())
        assert face["name"] == person.lower() and face["match"] is True and face["checks"] == [], face
        assert facegnet_says(server, probe) == person
    for stranger in STRANGERS:
        answer = detector.recognize(snapshot(stranger, 3)).json()
        assert [p["userid"] for p in answer["predictions"]] == ["unknown"]
        [face] = normalize_deepstack(answer)
        assert face["name"] == "unknown" and face["match"] is False, face
    assert detector.recognize(no_face()).json() == {"success": True, "predictions": []}  # DeepStack's no-face answer

    for person in DEEPSTACK_PEOPLE:
        assert detector.remove(person).json() == {"success": True}
    listed = httpx.post(f"{server}/v1/vision/face/list", data={"api_key": TOKEN}).json()
    assert not set(DEEPSTACK_PEOPLE) & set(listed["faces"])
    answer = detector.recognize(snapshot(DEEPSTACK_PEOPLE[0], 3)).json()
    assert all(p["userid"] != DEEPSTACK_PEOPLE[0] for p in answer["predictions"])


@pytest.mark.slow
def test_keys_plugins_and_bad_requests_answer_in_each_clients_shape(server):
    probe = snapshot("Colin_Powell", 3)
    for key in ("", "not-the-token"):
        response = CompreFace(server, key=key).recognize(probe)
        assert response.status_code == 401 and "x-api-key" in response.json()["message"]
        response = DeepStack(server, key=key).recognize(probe)
        assert response.status_code == 401 and response.json()["success"] is False
    # Plugins facegnet lacks are named, and Double Take shows that message; landmarks it has.
    response = CompreFace(server, face_plugins="mask,gender,age").recognize(probe)
    assert response.status_code == 400
    message = response.json()["message"]
    assert "mask, gender, age" in message and "not available in facegnet" in message
    with pytest.raises(RuntimeError, match="mask, gender, age"):
        normalize_compreface(response.json())
    answer = CompreFace(server, face_plugins="landmarks").recognize(probe).json()
    box = answer["result"][0]["box"]
    assert len(answer["result"][0]["landmarks"]) == 5
    assert all(box["x_min"] <= x <= box["x_max"] and box["y_min"] <= y <= box["y_max"]
               for x, y in answer["result"][0]["landmarks"])
    # Not a photo, or no photo: one line, in the client's shape.
    response = CompreFace(server).recognize(("notes.jpg", b"this is not a picture"))
    assert response.status_code == 415 and response.json()["message"].startswith("notes.jpg: not an image")
    headers, body = form_data([("userid", "x"), ("api_key", TOKEN)])
    response = httpx.post(f"{server}/v1/vision/face/register", headers=headers, content=body)
    assert response.status_code == 400 and response.json() == {"success": False, "error": "No valid image file found: "
                                                              "send the photo as the form field 'image'"}
    response = httpx.delete(f"{server}/api/v1/recognition/faces", headers={"x-api-key": TOKEN})
    assert response.status_code == 400 and "subject" in response.json()["message"]  # never the whole gallery


# ---------------------------------------------------------------------------------------------- the score map
def test_scores_put_facegnets_thresholds_on_the_clients_lines():
    for match_at, verification in ((0.39335, 0.27787), (0.47, 0.27787), (0.30, 0.27787), (0.20, 0.27787)):
        unknown_below, top = anchors(match_at, verification)
        assert top == match_at and unknown_below < match_at
        assert unknown_below == min(verification, match_at - MIN_BAND)
        assert client_score(match_at, top, unknown_below) == MATCH_SCORE
        assert client_score(unknown_below, top, unknown_below) == UNKNOWN_SCORE
        assert (client_score(-1.0, top, unknown_below), client_score(1.0, top, unknown_below)) == (0.0, 1.0)
        grid = np.linspace(-1, 1, 2001)
        scores = [client_score(s, top, unknown_below) for s in grid]
        assert all(b >= a for a, b in pairwise(scores))  # monotonic: candidates keep their order
        for s in grid:  # Double Take's decisions are exactly facegnet's, after its own rounding
            score = client_score(s, top, unknown_below)
            assert (js_percent(score) >= MATCH["confidence"]) == (s >= top)
            assert (js_percent(score) < UNKNOWN["confidence"]) == (s < unknown_below)
        just_below = np.nextafter(top, -1.0)
        assert js_percent(client_score(just_below, top, unknown_below)) < 60
    # The same similarity scores lower when the threshold in force is stricter (a larger gallery, say).
    def score(similarity: float, match_at: float) -> float:
        unknown_below, match_at = anchors(match_at, 0.27787)
        return client_score(similarity, match_at, unknown_below)

    assert score(0.42, 0.47) < MATCH_SCORE <= score(0.42, 0.39335)
    assert client_score(float("nan"), 0.4, 0.3) == 0.0 and client_score(float("-inf"), 0.4, 0.3) == 0.0
    with pytest.raises(ValueError):
        client_score(0.5, 0.3, 0.4)
