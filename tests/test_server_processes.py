"""Several server processes on one gallery directory: ``facegnet serve --workers 2`` beside a second server.

Enrolments sent at the same time to different processes all land (the gallery's writer lock and SQLite
transactions), each process sees the others' people at once, and the same photo sent to two processes at
once becomes one template.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import ROOT, lfw_photo

pytest.importorskip("fastapi", reason="the server extra is not installed: pip install 'facegnet[server]'")
httpx = pytest.importorskip("httpx", reason="httpx is in the test extra: pip install -e '.[test]'")

pytestmark = pytest.mark.slow
TOKEN = "two-processes-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PEOPLE = {"A": ["Colin_Powell", "Tony_Blair"], "B": ["Serena_Williams", "Gerhard_Schroeder"]}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    gallery = tmp_path_factory.mktemp("shared") / "gallery"
    ports = {"A": free_port(), "B": free_port()}
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    commands = {
        # A: two uvicorn worker processes; its token from the flag.
        "A": [sys.executable, "-m", "facegnet", "serve", "--gallery", str(gallery), "--port", str(ports["A"]),
              "--token", TOKEN, "--workers", "2", "--threads", "1"],
        # B: a separate server; its token from the environment.
        "B": [sys.executable, "-m", "facegnet", "serve", "--gallery", str(gallery), "--port", str(ports["B"]),
              "--threads", "1"],
    }
    processes = {
        key: subprocess.Popen(command, env={**env, "FACEGNET_TOKEN": TOKEN} if key == "B" else env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        for key, command in commands.items()
    }
    urls = {key: f"http://127.0.0.1:{port}" for key, port in ports.items()}
    try:
        deadline = time.monotonic() + 180
        for key, url in urls.items():
            while True:
                assert processes[key].poll() is None, processes[key].stderr.read().decode()
                try:
                    if httpx.get(url + "/health", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, f"server {key} did not start"
                time.sleep(0.3)
        yield urls, gallery
    finally:
        for process in processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)  # the server and its workers: a group we started
        for process in processes.values():
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)


def enroll(url: str, person: str, numbers=(1, 2)) -> httpx.Response:
    files = [("file", (f"{person}_{n}.jpg", lfw_photo(person, n).read_bytes(), "image/jpeg")) for n in numbers]
    return httpx.post(f"{url}/api/people/{person}/photos", files=files, headers=AUTH, timeout=120)


def test_processes_share_one_gallery(servers):
    urls, gallery = servers
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
