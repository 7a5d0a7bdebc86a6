"""The HTTP API in-process (FastAPI's TestClient): every endpoint, every bad upload, the token rules.

Real photos (LFW), the real recogniser and a real gallery on disk; no mocks.
"""
from __future__ import annotations

import functools
import io
import os
import re
import stat
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import lfw_photo
from PIL import Image

pytest.importorskip("fastapi", reason="the server extra is not installed: pip install 'facegnet[server]'")
with warnings.catch_warnings():  # starlette's TestClient prefers httpx2; httpx works
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

from facegnet.errors import FacegnetError  # noqa: E402
from facegnet.gallery import Gallery  # noqa: E402
from facegnet.server import create_app  # noqa: E402
from facegnet.server.auth import TOKEN_FILE, is_loopback, resolve_token  # noqa: E402

TOKEN = "test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def photo_bytes(name: str, number: int = 1) -> bytes:
    return lfw_photo(name, number).read_bytes()


def jpeg(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=92)
    return out.getvalue()


def upload(data: bytes, name: str = "photo.jpg", field: str = "file"):
    return (field, (name, data, "image/jpeg"))


@pytest.fixture(scope="module")
def server(tmp_path_factory, recognizer):
    """One app on a fresh gallery for the module: Alice (Colin Powell) and Bob (Serena Williams) enrolled."""
    gallery = tmp_path_factory.mktemp("server") / "gallery"
    app = create_app(gallery, TOKEN, recognizer=recognizer, max_upload_mb=1.0, max_request_mb=3.0)
    with TestClient(app) as client:
        for person, lfw_name in (("Alice", "Colin_Powell"), ("Bob", "Serena_Williams")):
            files = [upload(photo_bytes(lfw_name, n), f"{lfw_name}_{n}.jpg") for n in (1, 2)]
            response = client.post(f"/api/people/{person}/photos", files=files, headers=AUTH)
            assert response.status_code == 201, response.text
            assert len(response.json()["added"]) == 2
        yield client, gallery


def state(gallery: Path) -> tuple[list, list[str]]:
    """What a failed request must not change: the people with their templates, and the stored photos."""
    with Gallery(gallery, check_fingerprint=False) as g:
        people = [(name, [t.id for t in g.templates(name)]) for name, _ in g.people()]
    photos = sorted(p.name for p in (gallery / "photos").iterdir())
    return people, photos


# ---------------------------------------------------------------------------------------------- access
def test_health_page_and_docs_need_no_token_but_the_api_does(server):
    client, _ = server
    health = client.get("/health").json()
    assert {k: health[k] for k in ("status", "auth")} == {"status": "ok", "auth": True}
    info = client.get("/api/info", headers=AUTH).json()
    in_force = health["search_threshold"]  # the threshold identify uses now, and the rate it holds
    assert in_force["threshold"] == round(info["threshold"], 4) and in_force["source"] == info["search_threshold"]["source"]
    assert in_force["far_per_search"] == info["search_threshold"]["far_per_search"] and "people" not in in_force
    assert client.head("/health").status_code == 200
    page = client.get("/")
    assert page.status_code == 200 and "app.js" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    docs = client.get("/docs")
    assert docs.status_code == 200 and "/static-offline-docs/swagger-ui-bundle.js" in docs.text  # no CDN
    assert client.get("/static-offline-docs/swagger-ui-bundle.js").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    for path in ("/api/people", "/api/people/{name}/photos", "/api/identify", "/api/verify", "/api/info",
                 "/api/clusters", "/api/live/{session}/frames"):
        assert path in paths
    for headers, reason in (({}, "missing token"), ({"Authorization": "Bearer nope-nope-nope"}, "wrong token"),
                            ({"Authorization": TOKEN}, "missing token")):
        response = client.get("/api/people", headers=headers)
        assert response.status_code == 401 and response.json()["error"].startswith(reason)
        assert response.headers["www-authenticate"] == "Bearer"
    # Nothing personal leaks without the token: thumbnails, identification, clusters.
    assert client.get("/api/people/Alice/templates/1/thumbnail").status_code == 401
    assert client.post("/api/identify", files=[upload(photo_bytes("Colin_Powell", 3))]).status_code == 401
    assert client.get("/api/clusters").status_code == 401


def test_token_rules(tmp_path, monkeypatch):
    monkeypatch.delenv("FACEGNET_TOKEN", raising=False)
    token = resolve_token(tmp_path / "g")
    path = tmp_path / "g" / TOKEN_FILE
    assert len(token) >= 32 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert resolve_token(tmp_path / "g") == token  # kept across restarts
    monkeypatch.setenv("FACEGNET_TOKEN", "from-the-environment")
    assert resolve_token(tmp_path / "g") == "from-the-environment"
    assert resolve_token(tmp_path / "g", given="from-the-flag-1") == "from-the-flag-1"
    assert resolve_token(tmp_path / "g", no_auth=True, host="127.0.0.1") is None
    assert resolve_token(tmp_path / "g", no_auth=True, host="::1") is None
    with pytest.raises(FacegnetError, match="only on a loopback host"):
        resolve_token(tmp_path / "g", no_auth=True, host="0.0.0.0")
    with pytest.raises(FacegnetError, match="at least 8"):
        resolve_token(tmp_path / "g", given="short")
    os.chmod(path, 0o644)
    monkeypatch.delenv("FACEGNET_TOKEN")
    with pytest.raises(FacegnetError, match="readable by others"):
        resolve_token(tmp_path / "g")
    assert is_loopback("localhost") and is_loopback("127.0.0.2") and not is_loopback("192.168.1.4")


def test_serve_refuses_no_auth_beyond_loopback(tmp_path, capsys):
    from facegnet.cli import main

    code = main(["serve", "--gallery", str(tmp_path / "g"), "--host", "0.0.0.0", "--no-auth"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and len(err) == 1 and "--no-auth is allowed only on a loopback host" in err[0]


def test_serve_says_so_when_the_port_is_taken(tmp_path, capsys):
    import socket

    from facegnet.cli import main

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        code = main(["serve", "--gallery", str(tmp_path / "g"), "--port", str(port), "--no-auth"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and len(err) == 1 and err[0].endswith(f"cannot listen on 127.0.0.1:{port}: Address already in use")


def test_no_auth_app_serves_without_token(tmp_path, recognizer):
    app = create_app(tmp_path / "open", None, recognizer=recognizer, threshold=0.42)
    with TestClient(app, base_url="http://127.0.0.1:8000") as client:
        health = client.get("/health").json()
        assert health["auth"] is False
        assert {k: health["search_threshold"][k] for k in ("threshold", "source")} == {"threshold": 0.42, "source": "given"}
        assert client.get("/api/info").json()["threshold"] == 0.42  # --threshold wins, and says so
        assert client.get("/api/people").json() == {"people": []}
        # A page elsewhere reaching it by DNS rebinding names another host: refused.
        rebound = client.get("/api/people", headers={"Host": "attacker.example:8000"})
        assert rebound.status_code == 403 and "localhost" in rebound.json()["error"]


# ---------------------------------------------------------------------------------------------- endpoints
def test_people_identify_and_verify(server):
    client, _ = server
    assert client.get("/api/people", headers=AUTH).json() == {
        "people": [{"name": "Alice", "templates": 2}, {"name": "Bob", "templates": 2}]
    }
    response = client.post("/api/identify", files=[upload(photo_bytes("Colin_Powell", 3), "probe.jpg")], headers=AUTH)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["image"] == "probe.jpg" and len(body["faces"]) == 1
    face = body["faces"][0]
    assert face["name"] == "Alice" and face["similarity"] >= client.get("/api/info", headers=AUTH).json()["threshold"]
    assert len(face["box"]) == 4 and face["candidates"][0]["name"] == "Alice"
    top2 = client.post("/api/identify?top_k=2", files=[upload(photo_bytes("Serena_Williams", 3))], headers=AUTH)
    assert [c["name"] for c in top2.json()["faces"][0]["candidates"]] == ["Bob", "Alice"]

    same = client.post("/api/verify", headers=AUTH, files=[upload(photo_bytes("Colin_Powell", 1), "a.jpg", "a"),
                                                           upload(photo_bytes("Colin_Powell", 4), "b.jpg", "b")])
    other = client.post("/api/verify", headers=AUTH, files=[upload(photo_bytes("Colin_Powell", 1), "a.jpg", "a"),
                                                            upload(photo_bytes("Serena_Williams", 1), "b.jpg", "b")])
    assert same.status_code == other.status_code == 200
    assert same.json()["same"] is True and other.json()["same"] is False
    assert set(same.json()) >= {"similarity", "same", "threshold", "box_a", "box_b", "notes"}
    missing = client.post("/api/verify", headers=AUTH, files=[upload(photo_bytes("Colin_Powell", 1), "a.jpg", "a")])
    assert missing.status_code == 422 and missing.json() == {"error": "missing field 'b'"}


def test_info_person_and_thumbnail(server):
    client, _ = server
    info = client.get("/api/info", headers=AUTH).json()
    assert info["people"] == 2 and info["templates"] == 4 and "path" not in info
    person = client.get("/api/people/Alice", headers=AUTH).json()
    assert person["name"] == "Alice" and len(person["templates"]) == 2
    template = person["templates"][0]["id"]
    thumb = client.get(f"/api/people/Alice/templates/{template}/thumbnail", headers=AUTH)
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    image = Image.open(io.BytesIO(thumb.content))
    assert max(image.size) == 128
    assert client.get("/api/people/Nobody", headers=AUTH).status_code == 404
    assert client.get(f"/api/people/Bob/templates/{template}/thumbnail", headers=AUTH).status_code == 404


def test_enrolling_a_photo_twice_adds_nothing(server):
    client, gallery = server
    before = state(gallery)
    again = client.post("/api/people/Alice/photos", files=[upload(photo_bytes("Colin_Powell", 1))], headers=AUTH)
    assert again.status_code == 200 and again.json()["added"] == [] and again.json()["existing"][0]["name"] == "Alice"
    assert state(gallery) == before


@functools.lru_cache(maxsize=1)
def bad_uploads() -> dict[str, tuple[bytes, int, str]]:
    """name → (bytes, expected status, expected reason) for every bad input the CLI rejects."""
    real = photo_bytes("Colin_Powell", 5)
    blank = jpeg(Image.new("RGB", (200, 200), (120, 130, 140)))
    small = jpeg(Image.open(lfw_photo("Colin_Powell", 5)).resize((70, 70)))
    noise = np.random.default_rng(0).integers(0, 255, (700, 700, 3), np.uint8)
    huge = io.BytesIO()
    Image.fromarray(noise).save(huge, format="BMP")  # a real image, over the 1 MB limit of this app
    assert len(huge.getvalue()) > 1024 * 1024
    return {
        "not-an-image.jpg": (b"this is text, not a photo\n" * 20, 415, "not an image"),
        "empty.jpg": (b"", 400, "empty file"),
        "truncated.jpg": (real[: len(real) // 2], 400, "truncated"),
        "huge.bmp": (huge.getvalue(), 413, "upload too large"),
        "blank.jpg": (blank, 422, "no face found"),
        "small.jpg": (small, 422, "face too small"),
    }


def test_bad_uploads_get_one_line_errors_and_write_nothing(server):
    client, gallery = server
    before = state(gallery)
    for name, (data, status, reason) in bad_uploads().items():
        enroll = client.post("/api/people/Carol/photos", files=[upload(data, name)], headers=AUTH)
        assert enroll.status_code == status, (name, enroll.text)
        error = enroll.json()["error"]
        assert error.startswith(f"{name}: ") and reason in error and "\n" not in error, error
        if name == "small.jpg":
            continue  # identify names faces of any size (the gallery's rule); verify refuses it below
        identify = client.post("/api/identify", files=[upload(data, name)], headers=AUTH)
        assert identify.status_code == status and reason in identify.json()["error"], (name, identify.text)
    small, status, _ = bad_uploads()["small.jpg"]
    verify = client.post("/api/verify", headers=AUTH,
                         files=[upload(photo_bytes("Colin_Powell", 1), "a.jpg", "a"), upload(small, "small.jpg", "b")])
    assert verify.status_code == 422 and verify.json()["error"].startswith("small.jpg: face too small")
    # Several photos, the last bad: none is enrolled, none is kept.
    files = [upload(photo_bytes("Tony_Blair", n), f"tb{n}.jpg") for n in (1, 2)]
    files.append(upload(bad_uploads()["blank.jpg"][0], "blank.jpg"))
    response = client.post("/api/people/Carol/photos", files=files, headers=AUTH)
    assert response.status_code == 422 and response.json()["error"] == "blank.jpg: no face found"
    assert state(gallery) == before
    assert client.post("/api/people/unknown/photos", files=files[:1], headers=AUTH).status_code == 422


def test_request_over_the_body_limit_is_refused(server):
    client, _ = server
    big = b"\xff" * (3 * 1024 * 1024 + 10)
    response = client.post("/api/identify", files=[upload(big, "big.jpg")], headers=AUTH)
    assert response.status_code == 413 and response.json()["error"].startswith("request too large")


def test_rename_merge_and_remove(server):
    client, gallery = server
    tb = [upload(photo_bytes("Tony_Blair", n), f"tb{n}.jpg") for n in (1, 2, 3)]
    assert client.post("/api/people/Tony/photos", files=tb[:2], headers=AUTH).status_code == 201
    assert client.post("/api/people/Anthony/photos", files=tb[2:], headers=AUTH).status_code == 201
    taken = client.patch("/api/people/Tony", json={"name": "Alice"}, headers=AUTH)
    assert taken.status_code == 409 and "merge" in taken.json()["error"]
    renamed = client.patch("/api/people/Tony", json={"name": "Tony Blair"}, headers=AUTH)
    assert renamed.status_code == 200 and renamed.json() == {"name": "Tony Blair", "previous": "Tony"}
    merged = client.post("/api/people/Anthony/merge", json={"into": "Tony Blair"}, headers=AUTH)
    assert merged.status_code == 200 and merged.json()["templates_moved"] == 1
    people = {p["name"]: p["templates"] for p in client.get("/api/people", headers=AUTH).json()["people"]}
    assert people["Tony Blair"] == 3 and "Anthony" not in people and "Tony" not in people
    probe = client.post("/api/identify", files=[upload(photo_bytes("Tony_Blair", 4))], headers=AUTH).json()
    assert probe["faces"][0]["candidates"][0]["name"] == "Tony Blair"  # the new name, at once
    templates = client.get("/api/people/Tony Blair", headers=AUTH).json()["templates"]
    photos_before = set(os.listdir(gallery / "photos"))
    gone = client.delete(f"/api/people/Tony Blair/templates/{templates[0]['id']}", headers=AUTH)
    assert gone.status_code == 200
    assert len(set(os.listdir(gallery / "photos"))) == len(photos_before) - 1  # its stored photo went too
    assert client.delete("/api/people/Tony Blair", headers=AUTH).json() == {"removed": "Tony Blair", "templates": 2}
    for method, path, body in (("delete", "/api/people/Tony Blair", None),
                               ("patch", "/api/people/Nobody", {"name": "X"}),
                               ("post", "/api/people/Nobody/merge", {"into": "Alice"}),
                               ("delete", "/api/people/Alice/templates/999999", None)):
        response = client.request(method.upper(), path, json=body, headers=AUTH)
        assert response.status_code == 404 and "error" in response.json(), (path, response.text)
    assert client.patch("/api/people/Alice", json={"name": "  "}, headers=AUTH).status_code == 422
    assert client.patch("/api/people/Alice", json={}, headers=AUTH).json() == {"error": "missing field 'name'"}


def test_live_frames_are_tracked_and_named(server):
    client, _ = server
    frame = jpeg(Image.open(lfw_photo("Serena_Williams", 4)))
    answers = [client.post("/api/live/session-0001/frames", files=[upload(frame, "frame.jpg")], headers=AUTH).json()
               for _ in range(4)]
    assert [a["frame"] for a in answers] == [0, 1, 2, 3]
    assert answers[0]["faces"] == []  # a track needs two detections before it counts
    bob = [face for face in answers[-1]["faces"] if face["name"] == "Bob"]  # (the photo shows a second face)
    assert len(bob) == 1 and bob[0]["track"] in {face["track"] for face in answers[1]["faces"]}  # one track
    assert any(e["event"] == "appeared" and e["name"] == "Bob" for a in answers for e in a["events"])
    end = client.delete("/api/live/session-0001", headers=AUTH).json()
    assert any(e["event"] == "left" and e["name"] == "Bob" for e in end["events"])
    assert client.delete("/api/live/session-0001", headers=AUTH).status_code == 404
    bad = client.post("/api/live/x/frames", files=[upload(frame)], headers=AUTH)
    assert bad.status_code == 422 and "session" in bad.json()["error"]


def test_clusters_name_merge_dismiss(server):
    client, gallery = server
    files = [upload(photo_bytes(person, n), f"{person}_{n}.jpg") for person in ("George_W_Bush", "Gerhard_Schroeder")
             for n in (1, 2, 3)]
    files.append(upload(b"not a photo", "notes.txt"))
    created = client.post("/api/clusters", files=files, headers=AUTH)
    assert created.status_code == 201, created.text
    job = created.json()
    assert len(job["faces"]) >= 6 and job["errors"] == [{"image": "notes.txt",
                                                         "error": "not an image (unrecognised file format)"}]
    by_person = {}
    for group in job["groups"]:
        people = {job["faces"][i]["name"].rsplit("_", 1)[0] for i in group["faces"]}
        assert len(people) == 1, group  # no group mixes the two men
        by_person.setdefault(people.pop(), []).append(group["id"])
    assert set(by_person) == {"George_W_Bush", "Gerhard_Schroeder"}
    assert client.get("/api/clusters", headers=AUTH).json()["jobs"][0]["id"] == job["id"]
    thumb = client.get(f"/api/clusters/{job['id']}/faces/0/thumbnail", headers=AUTH)
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    bush = by_person["George_W_Bush"]
    if len(bush) > 1:
        merged = client.post(f"/api/clusters/{job['id']}/merge", json={"groups": bush}, headers=AUTH)
        assert merged.status_code == 200
    named = client.post(f"/api/clusters/{job['id']}/groups/{bush[0]}/name", json={"name": "George"}, headers=AUTH)
    assert named.status_code == 200, named.text
    assert len(named.json()["added"]) == 3
    probe = client.post("/api/identify", files=[upload(photo_bytes("George_W_Bush", 4))], headers=AUTH).json()
    assert probe["faces"][0]["name"] == "George"
    dismissed = client.post(f"/api/clusters/{job['id']}/groups/{by_person['Gerhard_Schroeder'][0]}/dismiss",
                            headers=AUTH)
    assert dismissed.json()["state"] == "dismissed"
    states = {g["id"]: g["state"] for g in client.get(f"/api/clusters/{job['id']}", headers=AUTH).json()["groups"]}
    assert states[bush[0]] == "named" and states[by_person["Gerhard_Schroeder"][0]] == "dismissed"
    assert client.get("/api/clusters/000000000000", headers=AUTH).status_code == 404
    assert client.delete(f"/api/clusters/{job['id']}", headers=AUTH).status_code == 200
    assert not (gallery / "clusters" / job["id"]).exists()
    none = client.post("/api/clusters", files=[upload(b"text", "a.txt")], headers=AUTH)
    assert none.status_code == 422 and "no usable face" in none.json()["error"]


# ---------------------------------------------------------------------------------------------- no server paths
SERVER_PATH = re.compile(r"(?<![\w.])/(?:tmp|root|home|work|var|usr|srv|opt|mnt|data)/")


def assert_no_path(response, gallery: Path) -> None:
    text = response.text
    assert "error" in response.json(), text
    for spelled in {str(gallery), str(gallery.resolve()), str(gallery.parent)}:
        assert spelled not in text, text
    assert not SERVER_PATH.search(text), text


def test_errors_name_no_server_path(server):
    client, gallery = server
    checked = []

    def check(method: str, path: str, status: int, **kwargs) -> dict:
        response = client.request(method, path, headers=AUTH, **kwargs)
        assert response.status_code == status, (method, path, response.text)
        assert_no_path(response, gallery)
        checked.append(path)
        return response.json()

    taken = check("PATCH", "/api/people/Alice", 409, json={"name": "Bob"})
    assert taken == {"error": "'Bob' is already in the gallery: merge 'Alice' into 'Bob' instead"}
    check("POST", "/api/people/Alice/merge", 422, json={"into": "Alice"})
    check("POST", "/api/people/Nobody/merge", 404, json={"into": "Alice"})
    check("POST", "/api/people/unknown/photos", 422, files=[upload(photo_bytes("Tony_Blair", 6))])
    check("GET", "/api/people/Nobody", 404)
    check("DELETE", "/api/people/Alice/templates/999999", 404)
    check("GET", "/api/people/Alice/templates/999999/thumbnail", 404)
    for name, (data, status, _) in bad_uploads().items():
        check("POST", "/api/people/Carol/photos", status, files=[upload(data, name)])
        if status != 422:  # a camera frame without a face is no error
            check("POST", "/api/live/session-paths/frames", status, files=[upload(data, name)])
        check("POST", "/api/clusters", 422 if status != 413 else 413, files=[upload(data, name)])
    check("POST", "/api/verify", 415, files=[upload(b"text" * 50, "a.jpg", "a"), upload(b"text" * 50, "b.jpg", "b")])
    check("GET", "/api/clusters/000000000000", 404)
    check("DELETE", "/api/live/no-such-session", 404)
    # A template whose stored photo was damaged, then lost, on the server's disk.
    enrolled = client.post("/api/people/Dana/photos", files=[upload(photo_bytes("Tony_Blair", 5))], headers=AUTH)
    template = enrolled.json()["added"][0]["template"]
    stored = next(p for p in (gallery / "photos").iterdir() if p.read_bytes() == photo_bytes("Tony_Blair", 5))
    stored.write_bytes(b"damaged on disk")
    check("GET", f"/api/people/Dana/templates/{template}/thumbnail", 415)
    stored.unlink()
    assert "not on disk" in check("GET", f"/api/people/Dana/templates/{template}/thumbnail", 404)["error"]
    assert client.delete("/api/people/Dana", headers=AUTH).status_code == 200
    assert len(checked) > 20


# ---------------------------------------------------------------------------------------------- names
def test_names_with_control_characters_or_a_slash_get_422(server):
    client, gallery = server
    before = state(gallery)
    photo = [upload(photo_bytes("Tony_Blair", 7))]
    for quoted in ("x%00y", "bell%07", "esc%1B%5B31m", "del%7F"):
        response = client.post(f"/api/people/{quoted}/photos", files=photo, headers=AUTH)
        assert response.status_code == 422, (quoted, response.text)
        assert "control characters" in response.json()["error"]
    assert "control" in client.patch("/api/people/Alice", json={"name": "A\x1bb"}, headers=AUTH).json()["error"]
    assert client.post("/api/people/Alice/merge", json={"into": "x\x00"}, headers=AUTH).status_code == 422
    # A name with '/': the same 422 whether it is the new name of a rename or a name in the URL.
    renamed = client.patch("/api/people/Alice", json={"name": "AC/DC"}, headers=AUTH)
    assert renamed.status_code == 422
    expected = renamed.json()
    assert expected == {"error": "a person's name cannot contain '/' ('AC/DC')"}
    for method, path in (("POST", "/api/people/AC/DC/photos"), ("GET", "/api/people/AC/DC"),
                         ("PATCH", "/api/people/AC%2FDC"), ("DELETE", "/api/people/AC/DC"),
                         ("POST", "/api/people/AC/DC/merge"), ("DELETE", "/api/people/AC/DC/templates/1"),
                         ("GET", "/api/people/AC/DC/templates/1/thumbnail")):
        kwargs = {"files": photo} if path.endswith("photos") else {"json": {"name": "X", "into": "Bob"}}
        response = client.request(method, path, headers=AUTH, **kwargs)
        assert (response.status_code, response.json()) == (422, expected), (method, path, response.text)
    assert client.get("/api/people/AC/DC").status_code == 401  # the token first, as everywhere
    assert client.put("/api/people/Alice", headers=AUTH).status_code == 405
    assert state(gallery) == before
    from facegnet.server.people import clean_name

    assert clean_name("  Владимир   Путин ") == "Владимир Путин" and clean_name("Zoë Ångström") == "Zoë Ångström"


def test_favicon_and_head_of_the_page(server):
    client, _ = server
    icon = client.get("/favicon.ico")
    assert icon.status_code == 200 and icon.headers["content-type"] == "image/x-icon"
    assert Image.open(io.BytesIO(icon.content)).format == "ICO"
    head = client.head("/")
    assert head.status_code == 200 and head.content == b"" and head.headers["content-type"].startswith("text/html")


# ---------------------------------------------------------------------------------------------- big photos
def test_big_photo_is_decoded_reduced_and_answered_in_its_own_coordinates(server):
    client, _ = server
    small = photo_bytes("Colin_Powell", 6)
    big = jpeg(Image.open(io.BytesIO(small)).resize((4000, 4000), Image.BILINEAR))  # 16 times the photo
    assert len(big) < 1024 * 1024  # within this app's upload limit
    answers = [client.post("/api/identify", files=[upload(data, name)], headers=AUTH).json()
               for data, name in ((small, "small.jpg"), (big, "big.jpg"))]
    assert (answers[1]["width"], answers[1]["height"]) == (4000, 4000)
    assert [f["name"] for f in answers[1]["faces"]] == [f["name"] for f in answers[0]["faces"]] == ["Alice"]
    expected = np.array(answers[0]["faces"][0]["box"]) * 16
    found = np.array(answers[1]["faces"][0]["box"])
    size = expected[2] - expected[0]
    assert np.abs(found - expected).max() < 0.1 * size, (found, expected)  # the same face, in 4000-px pixels
    verify = client.post("/api/verify", headers=AUTH, files=[upload(big, "a.jpg", "a"), upload(small, "b.jpg", "b")])
    body = verify.json()
    assert body["same"] is True and np.abs(np.array(body["box_a"]) - np.array(body["box_b"]) * 16).max() < 0.1 * size


def test_identify_runs_beside_a_change_in_progress(server):
    """Recognition does not wait for the lock that changes take (an enrolment, a camera frame)."""
    from concurrent.futures import ThreadPoolExecutor

    client, _ = server
    service = client.app.state.service
    probe = [upload(photo_bytes("Serena_Williams", 3))]
    assert client.post("/api/identify", files=probe, headers=AUTH).status_code == 200  # the first runs alone
    pool = ThreadPoolExecutor(2)
    try:
        with service.lock:  # as an enrolment holds it (released, whatever happens, before the pool is waited for)
            answers = [pool.submit(client.post, "/api/identify", files=probe, headers=AUTH) for _ in range(2)]
            names = [a.result(timeout=30).json()["faces"][0]["name"] for a in answers]
    finally:
        pool.shutdown(wait=True)
    assert names == ["Bob", "Bob"]


def test_the_default_layout_follows_the_cores():
    from facegnet.cli.serve import worker_layout

    assert worker_layout(1) == (1, 1) and worker_layout(2) == (2, 1) and worker_layout(16) == (8, 2)
    assert worker_layout(4, threads=2) == (2, 2) and worker_layout(4, workers=1) == (1, 4)
    assert worker_layout(2, workers=1, threads=2) == (1, 2)
    from facegnet.cli import serve
    from facegnet.server import service

    assert serve.RECOGNITIONS_AT_ONCE == service.RECOGNITIONS_AT_ONCE  # the CLI's default is the server's


def test_each_kind_of_error_has_its_status():
    from facegnet.errors import GalleryError, ImageError, NoFaceError
    from facegnet.server.errors import status_for

    # facegnet.io's decompression-bomb guard (too many pixels): too costly to provoke with a real upload here.
    assert status_for(ImageError("image too large (30000×30000 pixels)", "x.png")) == 413
    assert status_for(ImageError("not an image (unrecognised file format)", "x")) == 415
    assert status_for(ImageError("unreadable or truncated image (broken data stream)", "x")) == 400
    assert status_for(NoFaceError("face too small (20 px; at least 32 px needed)", "x")) == 422
    assert status_for(GalleryError("busy: another process (pid 1) is writing to it; try again later")) == 503
    assert status_for(GalleryError("made with other weights")) == 409
