"""Live events on MQTT, through Debian's mosquitto broker started by the test on a free port (never the
system service): ``facegnet identify --video clip --headless --mqtt mqtt://...`` on a clip made of LFW photos,
a subscriber that times each message, and a broker that goes away and comes back.
"""
from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path

import cv2
import numpy as np
import pytest
from brokers import MOSQUITTO, Broker, Subscriber
from conftest import enrolled_gallery, lfw_photo, write_video

pytest.importorskip("paho.mqtt.client", reason="paho-mqtt is in the test extra: pip install -e '.[test]'")

from facegnet.errors import FacegnetError  # noqa: E402
from facegnet.live.mqtt import MqttPublisher, MqttTarget, slug  # noqa: E402

pytestmark = pytest.mark.skipif(MOSQUITTO is None, reason="Debian's mosquitto is not installed (.ci/run installs it)")

ENROLLED = {"Colin_Powell": "Colin Powell", "Serena_Williams": "Серена Уильямс"}
STRANGER = "George_W_Bush"
SEGMENT, GAP, FPS = 8, 5, 10  # frames with a face, then empty frames, at 10 frames/s


def event_time(event: dict) -> float:
    return datetime.fromisoformat(event["time"]).timestamp()


# ---------------------------------------------------------------------------------------------- fixtures
@pytest.fixture()
def broker():
    server = Broker().start()
    yield server
    server.remove()


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """Each person's LFW photo for 0.8 s, then 0.5 s of empty frames: Colin Powell, Serena Williams, a stranger."""
    photos = [cv2.imread(str(lfw_photo(folder, 1))) for folder in [*ENROLLED, STRANGER]]  # 250×250 each
    frames = [frame for image in photos for frame in ((image, SEGMENT), (np.zeros_like(image), GAP))]
    return write_video(tmp_path_factory.mktemp("mqtt_clip") / "door.avi", FPS, frames)


@pytest.fixture(scope="module")
def gallery(tmp_path_factory, recognizer) -> Path:
    return enrolled_gallery(tmp_path_factory.mktemp("mqtt_gallery"), recognizer, ENROLLED)


def identify(capfd, clip: Path, gallery: Path, url: str, *extra: str) -> tuple[int, list[dict], str]:
    """``facegnet identify --video clip --headless --mqtt url`` (in this process: no second interpreter and
    torch to start); returns the exit code, the JSON lines and stderr."""
    import torch

    from facegnet.cli import main

    threads = torch.get_num_threads()  # the live command sets one torch thread; the other tests keep theirs
    capfd.readouterr()
    try:
        code = main(["identify", "--video", str(clip), "--gallery", str(gallery), "--headless", "--detect-every",
                     "2", "--mqtt", url, *extra])
    finally:
        torch.set_num_threads(threads)
    out, err = capfd.readouterr()
    return code, [json.loads(line) for line in out.splitlines()], err


# ---------------------------------------------------------------------------------------------- the command
@pytest.mark.slow
def test_each_event_reaches_a_subscriber_within_a_second_of_its_frame(clip, gallery, broker, capfd):
    subscriber = Subscriber(broker.port, "home/door")
    try:
        code, lines, err = identify(capfd, clip, gallery, f"mqtt://127.0.0.1:{broker.port}/home/door")
        assert code == 0, err
        summary, events = lines[-1], lines[:-1]
        appeared = [e for e in events if e["event"] == "appeared"]
        assert [e["name"] for e in appeared] == [*ENROLLED.values(), "unknown"]
        subscriber.wait_for(lambda: len(subscriber.on("home/door/events")) == len(events))
        received = subscriber.on("home/door/events")
        assert [json.loads(payload) for _, payload in received] == events  # the JSON lines, in order
        for (arrived, payload) in received:
            event = json.loads(payload)
            if event["event"] == "appeared":  # from the frame's capture to the subscriber
                assert arrived - event_time(event) < 1.0, (event, arrived)
        assert summary["mqtt"] == {"broker": f"127.0.0.1:{broker.port}", "topic": "home/door",
                                   "events": len(events), "delivered": len(events), "dropped": 0,
                                   "undelivered": 0, "buffered": 0}

        # Presence per person (retained), and Home Assistant discovery for each enrolled person and 'unknown'.
        for name in [*ENROLLED.values(), "unknown"]:
            states = [payload for _, payload in subscriber.on(f"home/door/people/{slug(name)}")]
            assert states[-2:] == ["ON", "OFF"], (name, states)
            attributes = json.loads(subscriber.on(f"home/door/people/{slug(name)}/attributes")[-1][1])
            assert attributes["name"] == name and attributes["event"] == "left"
        assert [p for _, p in subscriber.on("home/door/status")][-1] == "offline"
    finally:
        subscriber.close()
    # The discovery configs are retained: a Home Assistant that starts later still finds every sensor.
    late = Subscriber(broker.port, "homeassistant")
    try:
        late.wait_for(lambda: len(late.messages) >= 3, timeout=5)
        configs = {topic: json.loads(payload) for _, topic, payload, retained in late.messages if retained}
        for name in [*ENROLLED.values(), "unknown"]:
            config = configs[f"homeassistant/binary_sensor/facegnet_home_door/{slug(name)}/config"]
            assert config["state_topic"] == f"home/door/people/{slug(name)}"
            assert config["availability"] == [{"topic": "home/door/status", "payload_available": "online",
                                               "payload_not_available": "offline"}]
            assert config["availability_mode"] == "any" and config["device_class"] == "occupancy"
        assert configs[f"homeassistant/binary_sensor/facegnet_home_door/{slug('Серена Уильямс')}/config"]["name"] \
            == "Серена Уильямс"
    finally:
        late.close()


@pytest.mark.slow
def test_recognition_goes_on_when_the_broker_goes_away(clip, gallery, broker, capfd):
    subscriber = Subscriber(broker.port, "porch")

    def stop_at_first_appearance(client, userdata, message) -> None:
        if b'"appeared"' in message.payload and broker.process is not None:
            broker.stop()  # while the first person is in view: the others come and go without a broker

    subscriber.client.on_message = stop_at_first_appearance
    try:
        code, lines, err = identify(capfd, clip, gallery, f"mqtt://127.0.0.1:{broker.port}/porch", "--realtime")
    finally:
        subscriber.close()
    assert code == 0, err
    summary, events = lines[-1], lines[:-1]
    assert [e["name"] for e in events if e["event"] == "appeared"] == [*ENROLLED.values(), "unknown"]
    assert summary["ended"] == "end of file" and summary["frames_processed"] == summary["frames_read"]
    stats = summary["mqtt"]
    assert broker.process is None and stats["events"] == len(events) and 1 <= stats["delivered"] < len(events)
    assert stats["delivered"] + stats["dropped"] + stats["undelivered"] == len(events)
    assert "lost the broker" in err
    assert f"{len(events) - stats['delivered']} of {len(events)} event(s) did not reach the broker" in err


def test_a_message_paho_took_while_the_connection_was_down_counts_as_unacknowledged():
    """paho's is_published() raises for a message handed to it without a connection; the publisher counts it as
    not acknowledged (this raised from close() when the broker went away just before a publish)."""
    import paho.mqtt.client as paho

    from facegnet.live.mqtt import _published

    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="facegnet-test-offline")
    info = client.publish("porch/events", "{}", qos=1)
    assert info.rc == paho.MQTT_ERR_NO_CONN
    with pytest.raises(RuntimeError):
        info.is_published()
    assert _published(info) is False


def test_a_bad_mqtt_url_is_one_line_before_any_model_loads(clip, gallery, capfd):
    from facegnet.cli import main

    started = time.monotonic()
    code = main(["identify", "--video", str(clip), "--gallery", str(gallery), "--headless",
                 "--mqtt", "http://broker/topic"])
    lines = capfd.readouterr().err.strip().splitlines()
    assert code != 0 and len(lines) == 1 and "mqtt:// or mqtts://" in lines[0] and "http" in lines[0]
    assert time.monotonic() - started < 5


# ---------------------------------------------------------------------------------------------- the publisher
def test_events_wait_for_a_broker_that_comes_back_and_old_ones_are_dropped(broker):
    # A persistent session: the broker keeps the subscription (and queues for it) across its own restart.
    subscriber = Subscriber(broker.port, "garage", client_id="garage-watcher")
    log: list[str] = []
    now = [0.0]  # the buffer's clock, moved on by the test instead of sleeping
    publisher = MqttPublisher(MqttTarget.parse(f"mqtt://127.0.0.1:{broker.port}/garage?buffer=1&discovery=off"),
                              people=["Ann"], log=log.append, clock=lambda: now[0])

    def event(track: int, kind: str = "appeared") -> dict:
        return {"event": kind, "time": "2026-01-01T00:00:00.000Z", "track": track, "name": "Ann",
                "similarity": 0.5, "box": [0, 0, 10, 10]}

    try:
        assert publisher.start(wait=5)
        publisher(event(0))
        subscriber.wait_for(lambda: len(subscriber.on("garage/events")) == 1)
        broker.stop()
        deadline = time.monotonic() + 10
        while publisher.connected:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        publisher(event(0, "left"))  # waits...
        publisher(event(1))
        now[0] += 1.5  # ...longer than the buffer allows: both are dropped when the next event comes
        publisher(event(1, "left"))
        publisher(event(2))
        assert publisher.stats()["dropped"] == 2 and publisher.stats()["buffered"] == 2
        broker.start()

        def received() -> list[tuple[int, str]]:  # QoS 1 is at least once: a restarted broker may repeat one
            events = (json.loads(p) for p in dict.fromkeys(p for _, p in subscriber.on("garage/events")))
            return [(e["track"], e["event"]) for e in events]

        subscriber.wait_for(lambda: len(received()) == 3)
        assert received() == [(0, "appeared"), (1, "left"), (2, "appeared")]
        # Ann's presence is retained state: ON again after the events that waited.
        subscriber.wait_for(lambda: subscriber.on("garage/people/ann")[-1:] and
                            subscriber.on("garage/people/ann")[-1][1] == "ON")
    finally:
        publisher.close()
        subscriber.close()
    stats = publisher.stats()
    assert (stats["events"], stats["delivered"], stats["dropped"], stats["undelivered"]) == (5, 3, 2, 0)
    assert any(line.startswith("lost the broker") for line in log)
    assert any("away for more than 1 s" in line for line in log)
    assert any(line.startswith("reconnected") and "sent 2 buffered event(s)" in line for line in log)
    assert any("2 of 5 event(s) did not reach the broker" in line for line in log)


def test_urls_and_slugs():
    target = MqttTarget.parse("mqtt://user:p%40ss@broker.local:1884/home/door?buffer=5&discovery=off")
    assert (target.host, target.port, target.topic, target.username, target.password) == \
        ("broker.local", 1884, "home/door", "user", "p@ss")
    assert target.buffer_seconds == 5 and target.discovery is None and not target.tls
    assert MqttTarget.parse("mqtts://broker").port == 8883 and MqttTarget.parse("mqtts://broker").tls
    assert MqttTarget.parse("mqtt://broker").topic == "facegnet"
    assert MqttTarget.parse("mqtt://broker/x").discovery == "homeassistant"
    for url, reason in (("broker:1883/x", "scheme"), ("mqtt://broker:99999/x", "port"), ("mqtt:///x", "no broker"),
                        ("mqtt://b/home/#", "cannot hold"), ("mqtt://b/x?qos=2", "unknown option"),
                        ("mqtt://b/x?buffer=soon", "buffer")):
        with pytest.raises(FacegnetError, match=reason):
            MqttTarget.parse(url)
    assert slug("Colin Powell") == "colin_powell"
    assert slug("Серена Уильямс").startswith("person_") and slug("Серена Уильямс") != slug("Иван Петров")
    assert slug("O'Neil") != slug("O Neil")


# ---------------------------------------------------------------------------------------------- the server
def test_the_servers_camera_sessions_publish_too(gallery, broker, recognizer, tmp_path):
    import shutil as _shutil
    import warnings

    with warnings.catch_warnings():  # starlette's TestClient prefers httpx2; httpx works
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient
    from facegnet.server import create_app

    served = tmp_path / "gallery"
    _shutil.copytree(gallery, served)
    subscriber = Subscriber(broker.port, "browser")
    app = create_app(served, "camera-token-123", recognizer=recognizer,
                     mqtt=f"mqtt://127.0.0.1:{broker.port}/browser?discovery=off")
    frame = ("file", ("frame.jpg", lfw_photo("Colin_Powell", 1).read_bytes(), "image/jpeg"))
    headers = {"Authorization": "Bearer camera-token-123"}
    try:
        with TestClient(app) as client:
            answers = [client.post("/api/live/kitchen-tablet/frames", files=[frame], headers=headers).json()
                       for _ in range(6)]
            ended = client.delete("/api/live/kitchen-tablet", headers=headers).json()
        shown = [e for a in answers for e in a["events"]] + ended["events"]
        assert [(e["event"], e["name"]) for e in shown] == [("appeared", "Colin Powell"), ("left", "Colin Powell")]
        subscriber.wait_for(lambda: len(subscriber.on("browser/events")) == 2)
        published = [json.loads(p) for _, p in subscriber.on("browser/events")]
        assert published == [{**e, "session": "kitchen-tablet"} for e in shown]
        assert [p for _, p in subscriber.on("browser/people/colin_powell")][-2:] == ["ON", "OFF"]
    finally:
        subscriber.close()


def test_publishers_sharing_presence_announce_once_and_agree_on_who_is_in_view(broker, tmp_path):
    """Two publishers with one :class:`SharedPresence` (what two server workers have): a face that appears
    through one and leaves through the other turns its person OFF; one that is in view of two sessions keeps
    them ON until both have left; discovery and the first states come from one of them only. Each says whether
    it is up on its own topic, and discovery lists both (available while any is online)."""
    from facegnet.live.presence import SharedPresence

    subscriber, discovery = Subscriber(broker.port, "shed"), Subscriber(broker.port, "homeassistant")
    url = f"mqtt://127.0.0.1:{broker.port}/shed"
    publishers = [MqttPublisher(MqttTarget.parse(url), people=["Ann"], log=lambda line: None,
                                presence=SharedPresence(tmp_path, ["Ann"], workers=2)) for _ in range(2)]
    workers = ["shed/status/worker-1", "shed/status/worker-2"]

    def status(topic: str) -> list[str]:
        return [payload for _, payload in subscriber.on(topic)]

    def event(kind: str, session: str, track: int = 1, name: str = "Ann") -> dict:
        return {"event": kind, "time": "2026-01-01T00:00:00.000Z", "track": track, "name": name,
                "similarity": 0.5, "session": session}

    def states() -> list[str]:
        return [payload for _, payload in subscriber.on("shed/people/ann")]

    try:
        assert all(p.start(wait=5) for p in publishers)
        subscriber.wait_for(lambda: all(status(topic) == ["online"] for topic in workers))
        first, second = publishers
        first(event("appeared", "porch"))
        second(event("appeared", "garage"))  # the same track id in another session: another track
        second(event("left", "porch"))  # the garage still has Ann
        subscriber.wait_for(lambda: len(subscriber.on("shed/events")) == 3)
        time.sleep(0.3)
        assert states()[-1] == "ON", states()
        first(event("left", "garage"))  # the garage's face leaves through the other publisher
        subscriber.wait_for(lambda: len(subscriber.on("shed/events")) == 4 and states()[-1] == "OFF")
        second(event("appeared", "porch", 2, "Bea"))  # a name enrolled since: its discovery once
        subscriber.wait_for(lambda: len(subscriber.on("shed/events")) == 5)
        first(event("left", "porch", 2, "Bea"))
        subscriber.wait_for(lambda: [p for _, p in subscriber.on("shed/people/bea")][-1:] == ["OFF"])
        first.close()
        subscriber.wait_for(lambda: status(workers[0])[-1:] == ["offline"])
        assert status(workers[1]) == ["online"]
        successor = SharedPresence(tmp_path, workers=2)  # a worker started in place of the first
        assert successor.worker() == 1  # the number the first let go, its topic in discovery
        successor.close()
    finally:
        for publisher in publishers:
            publisher.close()
        subscriber.close()
    configs = {topic.split("/")[-2]: json.loads(payload) for _, topic, payload, _ in discovery.messages}
    discovery.close()
    assert len(discovery.messages) == 3 and sorted(configs) == ["ann", "bea", "unknown"], configs  # not 1 a publisher
    listed = [*workers, "shed/status/worker-3"]  # and the number a restart may take (see availability_topics)
    assert all(c["availability_mode"] == "any" and [a["topic"] for a in c["availability"]] == listed
               for c in configs.values()), configs
    assert status("shed/status") == []  # a process alone's topic: the server process's, not its workers'
    assert states().count("OFF") == 2  # the first state (once), and when the garage's face left


def test_a_worker_started_later_announces_the_people_enrolled_since_once(broker, tmp_path):
    """A server's second worker may start after the first has connected and announced, and after someone was
    enrolled (through another server on the same gallery): that person gets one discovery config, from the late
    worker on connecting, and none again when seen through either worker."""
    from facegnet.live.presence import SharedPresence

    discovery = Subscriber(broker.port, "homeassistant")
    url = f"mqtt://127.0.0.1:{broker.port}/yard"
    publishers = []
    try:
        publishers.append(MqttPublisher(MqttTarget.parse(url), people=["Ann"], log=lambda line: None,
                                        presence=SharedPresence(tmp_path, ["Ann"], workers=2)))
        assert publishers[0].start(wait=5)
        discovery.wait_for(lambda: len(discovery.messages) == 2)  # Ann and unknown, from the announcer
        publishers.append(MqttPublisher(MqttTarget.parse(url), people=["Ann", "Bea"], log=lambda line: None,
                                        presence=SharedPresence(tmp_path, ["Ann", "Bea"], workers=2)))
        assert publishers[1].start(wait=5)
        discovery.wait_for(lambda: len(discovery.messages) == 3)
        for publisher in publishers:  # Bea seen through each worker
            publisher({"event": "appeared", "time": "2026-01-01T00:00:00.000Z", "track": 1, "name": "Bea",
                       "similarity": 0.5, "session": f"cam-{len(discovery.messages)}"})
        time.sleep(0.5)  # any config that would follow
    finally:
        for publisher in publishers:
            publisher.close()
        discovery.close()
    topics = [topic.split("/")[-2] for _, topic, _, _ in discovery.messages]
    assert sorted(topics) == ["ann", "bea", "unknown"], topics


def test_sessions_shared_by_two_workers_end_once_when_idle(gallery, recognizer, tmp_path):
    """Two :class:`LiveSessions` sharing a folder (what two server workers have): a session idle past its time
    ends once, from its current state, whichever worker notices; the other's old copy says nothing more."""
    import shutil as _shutil

    from facegnet.server.live import LiveSessions
    from facegnet.server.service import GalleryService
    from facegnet.server.uploads import Upload, decode

    served = tmp_path / "gallery"
    _shutil.copytree(gallery, served)
    shared = tmp_path / "live"
    shared.mkdir()
    service = GalleryService(served, recognizer)
    published: list[dict] = []
    workers = [LiveSessions(service, shared_dir=shared, idle_seconds=1.0) for _ in range(2)]
    for worker in workers:
        worker.publish = published.append
    frame = decode(Upload("frame.jpg", lfw_photo("Serena_Williams", 1).read_bytes()))
    try:
        shown = [e for n in range(6) for e in workers[n % 2].frame("porch-cam-1", frame)["events"]]
        assert [e["event"] for e in shown] == ["appeared"]
        time.sleep(1.2)
        workers[0].frame("garage-cam-1", frame)  # notices the porch is idle: its faces leave
        workers[1].frame("garage-cam-1", frame)  # its own copy of the porch session is gone with the file
    finally:
        service.close()
    porch = [(e["event"], e["name"]) for e in published if e["session"] == "porch-cam-1"]
    assert porch == [("appeared", ENROLLED["Serena_Williams"]), ("left", ENROLLED["Serena_Williams"])], porch
