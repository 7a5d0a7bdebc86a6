"""Debian's mosquitto, started by a test on a free loopback port with its own configuration (never the system
service), and a real MQTT client that records every message it receives."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from servers import free_port

MOSQUITTO = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else None)


class Broker:
    """mosquitto on 127.0.0.1:port with its own config; sessions persist across a restart (persistence file).

    Its folder is a fresh one under the system's temporary directory, open to mosquitto's own user: started
    as root, mosquitto drops to that user before it writes its database (pytest's folders are root's only).
    """

    def __init__(self) -> None:
        self.port = free_port()
        self.folder = Path(tempfile.mkdtemp(prefix="facegnet-mosquitto-"))
        os.chmod(self.folder, 0o777)
        self.config = self.folder / "mosquitto.conf"
        self.config.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
                               f"persistence_location {self.folder}/\nlog_dest stderr\n")
        self.process: subprocess.Popen | None = None

    def start(self) -> Broker:
        self.process = subprocess.Popen([MOSQUITTO, "-c", str(self.config)], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while True:
            assert self.process.poll() is None, self.process.stderr.read().decode()
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                assert time.monotonic() < deadline, "mosquitto did not start"
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()  # SIGTERM: mosquitto saves its sessions and exits
            self.process.wait(10)
        self.process = None

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


class Subscriber:
    """A real MQTT client that records (receive wall time, topic, payload) of every message under ``topic``."""

    def __init__(self, port: int, topic: str, client_id: str | None = None) -> None:
        self.messages: list[tuple[float, str, str, bool]] = []
        self.lock = threading.Lock()
        import paho.mqtt.client as mqtt  # the test extra: test modules skip without it before they get here

        persistent = client_id is not None  # a session the broker keeps (and queues for) while we are away
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id or "",
                                  clean_session=not persistent)
        self.subscribed = threading.Event()
        self.client.on_connect = lambda c, u, f, rc, p=None: c.subscribe(f"{topic}/#", qos=1)
        self.client.on_subscribe = lambda *a: self.subscribed.set()
        self.client.on_message = self._message
        self.client.reconnect_delay_set(min_delay=1, max_delay=1)
        self.client.connect("127.0.0.1", port, keepalive=10)
        self.client.loop_start()
        assert self.subscribed.wait(10), "the subscriber could not subscribe"

    def _message(self, client, userdata, message) -> None:
        with self.lock:
            self.messages.append((time.time(), message.topic, message.payload.decode(), bool(message.retain)))

    def on(self, topic: str) -> list[tuple[float, str]]:
        with self.lock:
            return [(t, payload) for t, name, payload, _ in self.messages if name == topic]

    def wait_for(self, predicate, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            assert time.monotonic() < deadline, f"timed out; received: {self.messages}"
            time.sleep(0.05)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
