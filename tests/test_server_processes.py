"""Several server processes on one gallery directory: ``facegnet serve --workers 2`` beside a second server.

Enrolments sent at the same time to different processes all land (the gallery's writer lock and SQLite
transactions), each process sees the others' people at once, and the same photo sent to two processes at
once becomes one template. A camera session whose frames alternate between the two workers is tracked as
one, and with ``--mqtt`` (Debian's mosquitto) each of its events is published once and who is in view holds
across sessions and workers; a worker killed with SIGKILL is offline on its own availability topic while the
other keeps the Home Assistant sensors available. An 8000×8000 photo keeps a server's peak memory under 1.5 GB
(decoded reduced), and enrolling one raises it by far less than a full-size decode would.
"""
from __future__ import annotations

import http.client
import importlib.util
import io
import json
import os
import re
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from brokers import MOSQUITTO, Broker, Subscriber
from conftest import lfw_photo, process_memory, reset_peak_memory, write_big_photo
from servers import server_processes, serving_process, start_server, stop_servers, wait_healthy

pytest.importorskip("fastapi", reason="the server extra is not installed: pip install 'facegnet[server]'")
httpx = pytest.importorskip("httpx", reason="httpx is in the test extra: pip install -e '.[test]'")

pytestmark = pytest.mark.slow
TOKEN = "two-processes-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PEOPLE = {"A": ["Colin_Powell", "Tony_Blair"], "B": ["Serena_Williams", "Gerhard_Schroeder"]}


@pytest.fixture(scope="module")
def hall():
    """Debian's mosquitto and two listeners, on the camera events' topic (``hall``) and Home Assistant's discovery
    prefix, started before the servers (A publishes there); None where mosquitto or paho-mqtt is missing."""
    if MOSQUITTO is None or importlib.util.find_spec("paho") is None:
        yield None
        return
    broker = Broker().start()
    listeners = Subscriber(broker.port, "hall"), Subscriber(broker.port, "homeassistant")
    try:
        yield broker, *listeners
    finally:
        for listener in listeners:
            listener.close()
        broker.remove()


@pytest.fixture(scope="module")
def servers(tmp_path_factory, hall):
    gallery = tmp_path_factory.mktemp("shared") / "gallery"
    mqtt = [] if hall is None else ["--mqtt", f"mqtt://127.0.0.1:{hall[0].port}/hall"]
    started = {
        # A: two uvicorn worker processes; its token from the flag.
        "A": start_server("--gallery", str(gallery), "--token", TOKEN, "--workers", "2", "--threads", "1", *mqtt),
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
def send(connection: http.client.HTTPConnection, method: str, path: str, **kwargs) -> dict:
    request = httpx.Request(method, f"http://{connection.host}:{connection.port}{path}", headers=AUTH, **kwargs)
    connection.request(method, path, request.read(), dict(request.headers))
    response = connection.getresponse()
    body = response.read()
    assert response.status == 200, body
    return json.loads(body)


@pytest.fixture()
def worker_of_a(servers):
    """``connect(i)``: a new connection to server A that its worker ``i`` (0 or 1, in the order they are first
    met) holds. A new one for each request: a kept-alive connection left idle for 5 s is closed by uvicorn."""
    urls, _, pids = servers
    port = int(urls["A"].rsplit(":", 1)[1])
    processes = server_processes(pids["A"])[1:]
    met: list[int] = []
    opened: list[http.client.HTTPConnection] = []

    def connect(index: int) -> http.client.HTTPConnection:
        deadline = time.monotonic() + 60  # the second worker may still be loading its networks
        while True:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            opened.append(connection)
            send(connection, "GET", "/health")
            owner = serving_process(connection, processes)
            if owner is not None and owner not in met and len(met) < 2:
                met.append(owner)
            if owner is not None and index < len(met) and met[index] == owner:
                return connection
            connection.close()
            assert time.monotonic() < deadline, f"60 s of connections never reached worker {index} of {processes}"
            time.sleep(0.02)

    try:
        yield connect
    finally:
        for connection in opened:
            connection.close()


def test_a_camera_session_is_one_session_across_workers(worker_of_a):
    frame = lfw_photo("Serena_Williams", 4).read_bytes()
    answers = [send(worker_of_a(n % 2), "POST", "/api/live/session-across/frames",
                    files=[("file", ("frame.jpg", frame, "image/jpeg"))]) for n in range(6)]
    assert [a["frame"] for a in answers] == list(range(6))  # one session, not one per worker
    tracks = {f["track"] for a in answers[2:] for f in a["faces"] if f["name"] == "Serena_Williams"}
    appeared = [e for a in answers for e in a["events"] if e["event"] == "appeared" and e["name"] == "Serena_Williams"]
    assert len(tracks) == 1 and len(appeared) == 1, answers
    end = send(worker_of_a(0), "DELETE", "/api/live/session-across")
    assert end["frames"] == 6 and any(e["event"] == "left" and e["name"] == "Serena_Williams" for e in end["events"])


def test_two_workers_publish_each_camera_event_once_on_mqtt(hall, worker_of_a):
    """``--workers 2 --mqtt``: each worker has its own connection to the broker and publishes the events of the
    frames it handles, each once; a person stays ON while a session on either worker shows them and turns OFF
    when the last leaves, whichever worker handles it; discovery and the first states go out once."""
    from facegnet.live.mqtt import slug

    if hall is None:
        pytest.skip("Debian's mosquitto or paho-mqtt is missing (.ci/run installs mosquitto; paho-mqtt is in the "
                    "test extra)")
    _, events, discovery = hall
    frame = [("file", ("frame.jpg", lfw_photo("Serena_Williams", 1).read_bytes(), "image/jpeg"))]
    shown: list[tuple[int | None, str, dict]] = []  # (worker, session, event) of every event in the answers

    def post(worker: int, session: str) -> None:
        answer = send(worker_of_a(worker), "POST", f"/api/live/{session}/frames", files=frame)
        shown.extend((worker, session, e) for e in answer["events"])

    def end(worker: int, session: str) -> None:
        answer = send(worker_of_a(worker), "DELETE", f"/api/live/{session}")
        shown.extend((worker, session, e) for e in answer["events"])

    def published() -> list[dict]:
        return [p for p in (json.loads(m) for _, m in events.on("hall/events")) if p["session"].endswith("-cam")]

    for n in range(6):  # the porch's frames alternate between the workers
        post(n % 2, "porch-cam")
    appeared_on, _, appeared = next(item for item in shown if item[2]["event"] == "appeared")
    name = appeared["name"]  # Serena_Williams once the first test has enrolled her, else unknown
    state = f"hall/people/{slug(name)}"
    for _ in range(4):  # the garage's all on the second
        post(1, "garage-cam")
    events.wait_for(lambda: len(published()) == 2)
    assert events.on(state)[-1][1] == "ON"
    end(1 - appeared_on, "porch-cam")  # on the worker that did not see the face appear: the garage still shows it
    events.wait_for(lambda: len(published()) == 3)
    time.sleep(0.5)  # any state message that would follow
    assert events.on(state)[-1][1] == "ON", events.on(state)
    end(0, "garage-cam")  # on the worker that did not serve the garage
    events.wait_for(lambda: len(published()) == 4 and events.on(state)[-1][1] == "OFF")

    assert sorted((p["session"], p["event"], p["track"]) for p in published()) == sorted(
        (session, e["event"], e["track"]) for _, session, e in shown)  # each event once
    assert len(shown) == 4
    configs = [topic for _, topic, _, _ in discovery.messages]
    for person in {name, "unknown"}:
        assert sum(t.endswith(f"/{slug(person)}/config") for t in configs) == 1, configs
    first_event = events.on("hall/events")[0][0]
    first_states = [p for t, p in events.on("hall/people/unknown") if t < first_event]
    assert first_states == ["OFF"], first_states  # not one per worker


# ---------------------------------------------------------------------------------------------- a big photo
def test_an_8000_pixel_photo_keeps_the_server_under_1_5_gb(servers):
    from PIL import Image

    urls, _, pids = servers
    small = lfw_photo("Colin_Powell", 6).read_bytes()
    out = io.BytesIO()
    Image.open(io.BytesIO(small)).resize((8000, 8000), Image.BILINEAR).save(out, format="JPEG", quality=85)
    answers = [httpx.post(f"{urls['B']}/api/identify", headers=AUTH, timeout=120,
                          files=[("file", (name, data, "image/jpeg"))]).json()
               for name, data in (("small.jpg", small), ("big.jpg", out.getvalue()))]
    peak = process_memory("VmHWM", pids["B"])  # B is one process: the worker itself
    assert peak <= 1.5e9, f"peak memory {peak / 1e9:.2f} GB"
    assert (answers[1]["width"], answers[1]["height"]) == (8000, 8000)
    assert answers[1]["faces"][0]["name"] == answers[0]["faces"][0]["name"] == "Colin_Powell"
    expected = [v * 32 for v in answers[0]["faces"][0]["box"]]  # the same face, in the big photo's pixels
    found = answers[1]["faces"][0]["box"]
    assert max(abs(a - b) for a, b in zip(found, expected)) < 0.1 * (expected[2] - expected[0]), (found, expected)


def test_an_8000_pixel_photo_enrols_reduced(servers, tmp_path):
    urls, _, pids = servers
    photo = write_big_photo(tmp_path / "big.jpg", lfw_photo("Tony_Blair", 5))  # the face 8× at (3000, 2500)
    warm = httpx.post(f"{urls['B']}/api/people/Small_Tony/photos", headers=AUTH, timeout=120,  # on a small photo
                      files=[("file", ("small.jpg", lfw_photo("Tony_Blair", 5).read_bytes(), "image/jpeg"))])
    assert warm.status_code == 201, warm.text  # the networks are loaded, their buffers grown
    rss = process_memory("VmRSS", pids["B"])
    reset_peak_memory(pids["B"])
    answer = httpx.post(f"{urls['B']}/api/people/Big_Tony/photos", headers=AUTH, timeout=120,
                        files=[("file", ("big.jpg", photo.read_bytes(), "image/jpeg"))])
    rise = process_memory("VmHWM", pids["B"]) - rss
    assert answer.status_code == 201, answer.text
    # Reduced, it rose 17-140 MB in the Python API (tests/test_enrol_max_side.py); at full size, by 1.5 GB.
    assert rise < 400e6, f"enrolling an 8000×8000 photo raised the server's peak memory by {rise / 1e6:.0f} MB"
    [small] = httpx.get(f"{urls['B']}/api/people/Small_Tony", headers=AUTH).json()["templates"]
    [big] = httpx.get(f"{urls['B']}/api/people/Big_Tony", headers=AUTH).json()["templates"]
    expected = [v * 8 + (3000, 2500)[i % 2] for i, v in enumerate(small["box"])]  # in the big photo's pixels
    assert max(abs(a - b) for a, b in zip(big["box"], expected)) < 0.2 * (expected[2] - expected[0]), big


# ---------------------------------------------------------------------------------------------- a worker crashes
def held_worker_numbers(pids: list[int]) -> dict[int, int]:
    """Which worker number each of ``pids`` holds: the ``presence.worker-K.lock`` it keeps open (/proc)."""
    held = {}
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                found = re.search(r"/presence\.worker-(\d+)\.lock$", os.readlink(f"/proc/{pid}/fd/{fd}"))
                if found:
                    held[pid] = int(found.group(1))
        except OSError:  # it ended meanwhile
            continue
    return held


def test_a_crashed_worker_is_offline_on_its_own_topic_while_the_other_keeps_the_sensors_available(hall, servers):
    """``--workers 2 --mqtt``: each worker says whether it is up on ``TOPIC/status/worker-K``, and discovery lists
    both with ``availability_mode: any``. A worker killed with SIGKILL is marked offline on its own topic (the
    broker's last will) while the other's and the server's ``TOPIC/status`` stay online. (That the worker started
    in its place takes the same number: tests/test_mqtt.py, without the seconds it takes to load.)"""
    if hall is None:
        pytest.skip("Debian's mosquitto or paho-mqtt is missing (.ci/run installs mosquitto; paho-mqtt is in the "
                    "test extra)")
    _, events, discovery = hall
    _, _, pids = servers
    topics = {k: f"hall/status/worker-{k}" for k in (1, 2)}

    def last(topic: str) -> str | None:
        return next((payload for _, payload in reversed(events.on(topic))), None)

    events.wait_for(lambda: [last(t) for t in topics.values()] == ["online", "online"])
    assert last("hall/status") == "online"
    held = held_worker_numbers(server_processes(pids["A"])[1:])
    assert sorted(held.values()) == [1, 2], held
    victim, number = next(iter(held.items()))
    os.kill(victim, signal.SIGKILL)
    events.wait_for(lambda: last(topics[number]) == "offline", timeout=5)
    assert last(topics[3 - number]) == "online" and last("hall/status") == "online"

    configs = [json.loads(payload) for _, topic, payload, _ in discovery.messages if topic.endswith("/unknown/config")]
    assert configs[-1]["availability_mode"] == "any", configs
    listed = [a["topic"] for a in configs[-1]["availability"]]
    assert listed[:2] == [topics[1], topics[2]] and len(listed) == 3, configs  # and the number a restart may take
