"""``TOPIC/status`` for a server whose worker processes publish its events (``facegnet serve --workers N --mqtt``).

Each worker says whether it is up on a topic of its own, ``TOPIC/status/worker-K`` (see
:mod:`facegnet.live.mqtt`), so that one that crashes does not mark the others unavailable in Home Assistant.
``TOPIC/status`` keeps the meaning it has for a single process, "facegnet is running": the server process holds
a connection of its own that says ``online`` on each connection, and ``offline`` when the server stops, or as its
last will when the process or its connection dies.
"""
from __future__ import annotations

import re
import threading
import uuid

from facegnet.live.mqtt import MqttTarget, new_client, status_topic


class ServerStatus:
    """The server process's ``online`` / ``offline`` on ``TOPIC/status`` (retained, QoS 1).

    It never waits for the broker: :meth:`start` connects in the background and retries, like the workers'
    publishers (which report the broker's absence or refusal; this connection stays quiet).
    """

    def __init__(self, target: MqttTarget) -> None:
        self.target = target
        self.topic = status_topic(target.topic)
        node = re.sub(r"[^a-z0-9]+", "_", target.topic.lower()).strip("_") or "facegnet"
        self._client = new_client(target, target.client_id or f"facegnet-{node}-server-{uuid.uuid4().hex[:8]}",
                                  self.topic)
        self._client.on_connect = self._on_connect
        self._lock = threading.Lock()  # the paho thread says online, the server's thread offline
        self._closed = False

    def start(self) -> None:
        """Connect in the background (retried while the broker is away)."""
        self._client.connect_async(self.target.host, self.target.port, keepalive=15)
        self._client.loop_start()

    def close(self, wait: float = 3.0) -> None:
        """Say ``offline`` (waiting up to ``wait`` s for the broker to take it) and disconnect."""
        with self._lock:
            self._closed = True
            info = self._client.publish(self.topic, "offline", qos=1, retain=True) \
                if self._client.is_connected() else None
        if info is not None:
            try:
                info.wait_for_publish(wait)
            except (RuntimeError, ValueError):  # the connection went meanwhile: the last will says it
                pass
        self._client.disconnect()
        self._client.loop_stop()

    def __enter__(self) -> ServerStatus:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _on_connect(self, client, userdata, flags, reason_code, properties=None) -> None:
        if getattr(reason_code, "is_failure", False):
            return
        with self._lock:
            client.publish(self.topic, "offline" if self._closed else "online", qos=1, retain=True)


__all__ = ["ServerStatus"]
