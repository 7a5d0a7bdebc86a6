"""Several server processes on one gallery directory: ``facegnet serve --workers 2`` beside a second server.

Enrolments sent at the same time to different processes all land (the gallery's writer lock and SQLite
transactions), each process sees the others' people at once, and the same photo sent to two processes at
once becomes one template. A camera session whose frames alternate between the two workers is tracked as
one. An 8000×8000 photo keeps a server's peak memory under 1.5 GB (decoded reduced).
"""
from __future__ import annotations

import http.client
import io
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import ROOT, lfw_photo
from servers import start_server, stop_servers, wait_healthy

pytest.importorskip("fastapi", reason="the server extra is not installed: pip install 'facegnet[server]'")
httpx = pytest.importorskip("httpx", reason="httpx is in the test extra: pip install -e '.[test]'")

sys.path.insert(0, str(ROOT / "benchmarks"))
from host_info import processes_of  # noqa: E402 - what benchmarks/server_load.py measures a server's processes with

pytestmark = pytest.mark.slow
TOKEN = "two-processes-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PEOPLE = {"A": ["Colin_Powell", "Tony_Blair"], "B": ["Serena_Williams", "Gerhard_Schroeder"]}


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    gallery = tmp_path_factory.mktemp("shared") / "gallery"
    started = {
        # A: two uvicorn worker processes; its token from the flag.
        "A": start_server("--gallery", str(gallery), "--token", TOKEN, "--workers", "2", "--threads", "1"),
        # B: a separate server; its token from the environment.
        "B": start_server("--gallery", str(gallery), "--workers", "1", "--threads", "1",
                          env={"FACEGNET_TOKEN": TOKEN}),
    }
    try:
        deadline = time.monotonic() + 180
        for process, url in started.values():
            wait_healthy(process, url, deadline)
        yield ({key: url for key, (_, url) in started.items()}, gallery,
               {key: process.pid for key, (process, _) in started.items()})
    finally:
        stop_servers(process for process, _ in started.values())  # the servers and their workers


def enroll(url: str, person: str, numbers=(1, 2)) -> httpx.Response:
    files = [("file", (f"{person}_{n}.jpg", lfw_photo(person, n).read_bytes(), "image/jpeg")) for n in numbers]
    return httpx.post(f"{url}/api/people/{person}/photos", files=files, headers=AUTH, timeout=120)


def test_processes_share_one_gallery(servers):
    urls, gallery, _ = servers
    jobs = [(urls[key], person) for key, people in PEOPLE.items() for person in people]
    with ThreadPoolExecutor(len(jobs)) as pool:  # all four at once, two to each server
        answers = list(pool.map(lambda job: enroll(*job), jobs))
    assert [a.status_code for a in answers] == [201] * 4, [a.text for a in answers]
    expected = {"people": [{"name": p, "templates": 2} for p in sorted(sum(PEOPLE.values(), []))]}
    for url in urls.values():  # every process sees every enrolment, whichever process made it
        for _ in range(3):  # A's requests go to either of its workers
            assert httpx.get(f"{url}/api/people", headers=AUTH).json() == expected
    photo = ("file", ("probe.jpg", lfw_photo("Colin_Powell", 3).read_bytes(), "image/jpeg"))
    named = httpx.post(f"{urls['B']}/api/identify", files=[photo], headers=AUTH, timeout=60).json()
    assert named["faces"][0]["name"] == "Colin_Powell"  # enrolled through A, identified by B

    # The same new photo to both servers at once: one template, the other answer says it exists.
    with ThreadPoolExecutor(2) as pool:
        race = list(pool.map(lambda url: enroll(url, "Colin_Powell", (4,)), urls.values()))
    added = sum(len(r.json()["added"]) for r in race)
    existing = sum(len(r.json()["existing"]) for r in race)
    assert (added, existing) == (1, 1), [r.text for r in race]
    people = {p["name"]: p["templates"] for p in httpx.get(f"{urls['A']}/api/people", headers=AUTH).json()["people"]}
    assert people["Colin_Powell"] == 3
    assert len(list((gallery / "photos").iterdir())) == 9  # one stored photo per template, none left over
    assert httpx.get(f"{urls['A']}/api/people").status_code == 401  # the token rule holds in every worker


# ---------------------------------------------------------------------------------------------- camera sessions
def serving_process(connection: http.client.HTTPConnection, pids: list[int]) -> int | None:
    """Which of ``pids`` holds the server's end of this client connection (/proc/net/tcp and its fds)."""
    ours = connection.sock.getsockname()[1]
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[2].rsplit(":", 1)[1], 16) == ours:  # its remote end is our port
                inodes.add(f"socket:[{fields[9]}]")
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                if os.readlink(f"/proc/{pid}/fd/{fd}") in inodes:
                    return pid
        except OSError:
            continue
    return None


def send(connection: http.client.HTTPConnection, method: str, path: str, **kwargs) -> dict:
    request = httpx.Request(method, f"http://{connection.host}:{connection.port}{path}", headers=AUTH, **kwargs)
    connection.request(method, path, request.read(), dict(request.headers))
    response = connection.getresponse()
    body = response.read()
    assert response.status == 200, body
    return json.loads(body)


def test_a_camera_session_is_one_session_across_workers(servers):
    urls, _, pids = servers
    port = int(urls["A"].rsplit(":", 1)[1])
    workers = processes_of(pids["A"])[1:]
    by_worker: dict[int, http.client.HTTPConnection] = {}
    opened = []
    for _ in range(40):  # connections until two different workers hold one each
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        opened.append(connection)
        send(connection, "GET", "/health")
        owner = serving_process(connection, workers)
        by_worker.setdefault(owner, connection)
        if len([w for w in by_worker if w is not None]) == 2:
            break
    two = [c for w, c in by_worker.items() if w is not None]
    assert len(two) == 2, f"40 connections all reached one worker of {workers}"
    frame = lfw_photo("Serena_Williams", 4).read_bytes()
    answers = [send(two[n % 2], "POST", "/api/live/session-across/frames",
                    files=[("file", ("frame.jpg", frame, "image/jpeg"))]) for n in range(6)]
    assert [a["frame"] for a in answers] == list(range(6))  # one session, not one per worker
    tracks = {f["track"] for a in answers[2:] for f in a["faces"] if f["name"] == "Serena_Williams"}
    appeared = [e for a in answers for e in a["events"] if e["event"] == "appeared" and e["name"] == "Serena_Williams"]
    assert len(tracks) == 1 and len(appeared) == 1, answers
    end = send(two[0], "DELETE", "/api/live/session-across")
    assert end["frames"] == 6 and any(e["event"] == "left" and e["name"] == "Serena_Williams" for e in end["events"])
    for connection in opened:
        connection.close()


# ---------------------------------------------------------------------------------------------- a big photo
def peak_memory(pid: int) -> int:
    """The process's peak resident memory (VmHWM), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmHWM for process {pid}")


def test_an_8000_pixel_photo_keeps_the_server_under_1_5_gb(servers):
    from PIL import Image

    urls, _, pids = servers
    small = lfw_photo("Colin_Powell", 6).read_bytes()
    out = io.BytesIO()
    Image.open(io.BytesIO(small)).resize((8000, 8000), Image.BILINEAR).save(out, format="JPEG", quality=85)
    answers = [httpx.post(f"{urls['B']}/api/identify", headers=AUTH, timeout=120,
                          files=[("file", (name, data, "image/jpeg"))]).json()
               for name, data in (("small.jpg", small), ("big.jpg", out.getvalue()))]
    peak = peak_memory(pids["B"])  # B is one process: the worker itself
    assert peak <= 1.5e9, f"peak memory {peak / 1e9:.2f} GB"
    assert (answers[1]["width"], answers[1]["height"]) == (8000, 8000)
    assert answers[1]["faces"][0]["name"] == answers[0]["faces"][0]["name"] == "Colin_Powell"
    expected = [v * 32 for v in answers[0]["faces"][0]["box"]]  # the same face, in the big photo's pixels
    found = answers[1]["faces"][0]["box"]
    assert max(abs(a - b) for a, b in zip(found, expected)) < 0.1 * (expected[2] - expected[0]), (found, expected)
