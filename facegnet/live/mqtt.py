"""Live events on MQTT (paho-mqtt), for Home Assistant and other home-automation software.

``MqttPublisher(MqttTarget.parse("mqtt://broker:1883/facegnet"))`` is an event sink, called with the same
event dicts that ``facegnet identify --camera/--video/--stream`` writes as JSON lines. It publishes (QoS 1):

- ``TOPIC/events``: every ``appeared`` / ``renamed`` / ``left`` event, as the JSON object;
- ``TOPIC/people/<slug>``: ``ON`` while at least one face of that person is in view, else ``OFF`` (retained),
  with the last event as JSON attributes in ``TOPIC/people/<slug>/attributes`` (``unknown`` is a person too);
- ``TOPIC/status``: ``online``, and ``offline`` when the publisher stops or its connection dies (retained; the
  broker's last will);
- with discovery on (the default), a retained Home Assistant discovery config for every enrolled person, so
  each appears as a ``binary_sensor`` (occupancy) without any configuration in Home Assistant; it is available
  while its availability topic (or any of them: ``availability_mode: any``) says ``online``.

Who is present comes from a :class:`~facegnet.live.presence.Presence`: this process's own, or, for the worker
processes of one server (``facegnet serve --workers N --mqtt …``), one they share. Each worker then publishes
the events of the frames it handles, once each; a person is ``ON`` while any camera session on any worker has
them in view; and one worker at a time (the announcer) publishes discovery and the first states. Each worker
then has a number K of its own (1 to N, or N+1 after a restart) and its availability on ``TOPIC/status/worker-K``
(its last will there), and discovery lists them all: a worker that crashes leaves the sensors available while
another serves.
``TOPIC/status`` is then the server process's (:class:`~facegnet.live.server_status.ServerStatus`).

The broker may be away at start or go away later: recognition never waits for it. While it is away, messages
wait in a buffer for at most ``buffer`` seconds (and at most :data:`MAX_BUFFERED` messages), and are sent
when the connection is back; older ones are dropped. Drops and messages that never reached the broker are
reported on stderr and counted in :meth:`MqttPublisher.stats`.

URL: ``mqtt[s]://[USER[:PASSWORD]@]HOST[:PORT][/TOPIC][?discovery=PREFIX|off&buffer=SECONDS&client_id=ID]``;
the password may come from ``FACEGNET_MQTT_PASSWORD`` instead (it then stays out of process listings).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from facegnet.errors import FacegnetError
from facegnet.gallery import UNKNOWN
from facegnet.live.presence import Presence

PASSWORD_ENV = "FACEGNET_MQTT_PASSWORD"
DEFAULT_TOPIC = "facegnet"
DEFAULT_BUFFER_SECONDS = 60.0
#: The most messages held while the broker is away (the oldest go first beyond it).
MAX_BUFFERED = 10_000
DISCOVERY_PREFIX = "homeassistant"  # Home Assistant's default discovery prefix
_QOS = 1


@dataclass(frozen=True)
class MqttTarget:
    """Where and how to publish: parsed from an ``mqtt://`` URL by :meth:`parse`."""

    host: str
    port: int
    topic: str
    username: str | None = None
    password: str | None = None
    tls: bool = False
    discovery: str | None = DISCOVERY_PREFIX  # the Home Assistant discovery prefix; None: no discovery
    buffer_seconds: float = DEFAULT_BUFFER_SECONDS
    client_id: str | None = None

    @classmethod
    def parse(cls, url: str) -> MqttTarget:
        """Read ``mqtt[s]://[USER[:PASSWORD]@]HOST[:PORT][/TOPIC][?options]``; FacegnetError naming the problem."""
        def bad(reason: str) -> FacegnetError:
            return FacegnetError(f"--mqtt {url!r}: {reason} (expected mqtt://HOST[:PORT]/TOPIC)")

        parts = urlsplit(url.strip())
        if parts.scheme not in ("mqtt", "mqtts"):
            raise bad(f"the scheme must be mqtt:// or mqtts://, not {parts.scheme + '://' if parts.scheme else 'none'}")
        try:
            port = parts.port
        except ValueError:
            raise bad("the port must be a number between 1 and 65535") from None
        if not parts.hostname:
            raise bad("no broker host")
        topic = unquote(parts.path.strip("/")) or DEFAULT_TOPIC
        if any(c in topic for c in "+#\0") or "//" in topic or "#" in url:  # '#' would be read as a fragment
            raise bad(f"the topic {topic!r} cannot hold '+', '#' or empty levels")
        options = {key: values[-1] for key, values in parse_qs(parts.query, keep_blank_values=True).items()}
        unknown = sorted(set(options) - {"discovery", "buffer", "client_id"})
        if unknown:
            raise bad(f"unknown option(s) {', '.join(unknown)} (known: discovery, buffer, client_id)")
        discovery: str | None = options.get("discovery", DISCOVERY_PREFIX).strip("/")
        if discovery in ("", "off", "no", "false", "0"):
            discovery = None
        try:
            buffer_seconds = float(options.get("buffer", DEFAULT_BUFFER_SECONDS))
        except ValueError:
            raise bad(f"buffer must be a number of seconds, not {options['buffer']!r}") from None
        if not 0 <= buffer_seconds <= 86_400:
            raise bad("buffer must be between 0 and 86400 seconds")
        password = unquote(parts.password) if parts.password is not None else os.environ.get(PASSWORD_ENV)
        return cls(
            host=parts.hostname, port=port or (8883 if parts.scheme == "mqtts" else 1883), topic=topic,
            username=unquote(parts.username) if parts.username else None, password=password or None,
            tls=parts.scheme == "mqtts", discovery=discovery, buffer_seconds=buffer_seconds,
            client_id=options.get("client_id") or None,
        )

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


def slug(name: str) -> str:
    """A topic level and Home Assistant object id for a person: lower-case ASCII letters, digits and '_'.

    Names that lose characters on the way (other scripts, punctuation) get a short hash of the full name, so
    that two people never share a slug.
    """
    plain = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
    if plain and plain.replace("_", " ") == name.lower().strip():
        return plain
    digest = hashlib.sha1(name.encode("utf-8")).hexdigest()[:8]
    return f"{plain}_{digest}" if plain else f"person_{digest}"


def status_topic(topic: str, worker: int | None = None) -> str:
    """Where a publisher says ``online`` / ``offline``: ``TOPIC/status``, or worker K's ``TOPIC/status/worker-K``."""
    return f"{topic}/status" if worker is None else f"{topic}/status/worker-{worker}"


def availability_topics(topic: str, workers: int | None = None) -> list[str]:
    """The availability topics of a publisher alone (``workers`` None) or of a server's ``workers`` processes.

    Those are numbered 1 to N+1: a restart (uvicorn's on SIGHUP) starts each replacement before the worker it
    replaces stops, so one of them holds number N+1 for as long as they run."""
    return [status_topic(topic)] if workers is None else [status_topic(topic, k) for k in range(1, workers + 2)]


def require_client():
    """paho-mqtt's client module; FacegnetError saying how to install it when it is missing."""
    try:
        import paho.mqtt.client as mqtt
    except ImportError:
        raise FacegnetError("MQTT needs paho-mqtt: pip install 'facegnet[mqtt]'") from None
    return mqtt


def new_client(target: MqttTarget, client_id: str, status: str):
    """A paho client for ``target`` whose last will is ``offline`` on ``status`` (retained), not connected yet."""
    mqtt = require_client()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
    if target.username:
        client.username_pw_set(target.username, target.password)
    if target.tls:
        client.tls_set()
    client.will_set(status, "offline", qos=_QOS, retain=True)
    client.reconnect_delay_set(min_delay=1, max_delay=2)  # a restarted broker is found at once
    return client


def _published(info: Any) -> bool:
    """Whether the broker acknowledged a message. paho raises instead of answering for a message handed to it while
    the connection was down (its ``rc`` says so); such a message counts as not acknowledged."""
    try:
        return info.is_published()
    except (RuntimeError, ValueError):
        return False


@dataclass
class _Pending:
    queued: float  # time.monotonic() when it was produced
    topic: str
    payload: str
    retain: bool
    event: bool  # a face event (what the loss report counts), not a state or discovery message


class MqttPublisher:
    """An event sink that publishes to an MQTT broker, buffering while the broker is away.

    Args:
        target: where to publish.
        people: the enrolled names (for Home Assistant discovery and their initial ``OFF`` state).
        source: what the events come from (the camera, file or stream), added to each attributes message.
        log: called with one line for each connection change and loss (default: stderr).
        clock: seconds on a monotonic clock, for the age of buffered messages.
        presence: who is in view, when processes share it (a :class:`~facegnet.live.presence.SharedPresence`;
            default: this publisher's own, from ``people``).
    """

    def __init__(self, target: MqttTarget, *, people: Iterable[str] = (), source: str = "",
                 log: Callable[[str], None] | None = None, clock: Callable[[], float] = time.monotonic,
                 presence: Presence | None = None) -> None:
        self.target = target
        self.source = source
        self._clock = clock
        self.log = log or (lambda line: print(f"facegnet: mqtt: {line}", file=sys.stderr, flush=True))
        self._lock = threading.RLock()  # the paho thread and the live loop both publish
        self._buffer: deque[_Pending] = deque()
        self._inflight: list[tuple[Any, bool]] = []  # (MQTTMessageInfo, is an event) handed to paho
        self._connected = False
        self._ever_connected = threading.Event()
        self._outage_reported = False
        self._refusal_reported = False
        self._closed = False
        self._presence = presence if presence is not None else Presence(people)
        self.events = 0  # events given
        self.delivered = 0  # events the broker acknowledged
        self.dropped = 0  # events dropped after waiting longer than the buffer allows
        self.undelivered = 0  # events still not acknowledged when the publisher closed
        self._node = re.sub(r"[^a-z0-9]+", "_", target.topic.lower()).strip("_") or "facegnet"  # the device id
        worker = self._presence.worker()  # None: this process alone publishes
        self._status_topic = status_topic(target.topic, worker)
        client_id = target.client_id or f"facegnet-{self._node}-{uuid.uuid4().hex[:8]}"
        if worker is not None and target.client_id:  # one id per connection: the broker drops a duplicate
            client_id = f"{target.client_id}-worker-{worker}"
        self._client = new_client(target, client_id, self._status_topic)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect

    # ------------------------------------------------------------------------------------------ lifecycle
    def start(self, wait: float = 3.0) -> bool:
        """Connect in the background; wait up to ``wait`` seconds for the broker. Returns whether it answered
        (if not, events are buffered and the connection keeps being retried)."""
        self._client.connect_async(self.target.host, self.target.port, keepalive=15)
        self._client.loop_start()
        if self._ever_connected.wait(wait):
            return True
        self.log(f"broker {self.target.address} not reachable yet; events wait up to "
                 f"{self.target.buffer_seconds:g} s for it while recognition goes on")
        return False

    def close(self, wait: float = 3.0) -> None:
        """Send what can still be sent (waiting up to ``wait`` s), mark the source offline, disconnect, and
        report events that never reached the broker."""
        deadline = time.monotonic() + wait
        with self._lock:
            self._closed = True
            connected = self._connected
        if connected:
            self._publish(self._status_topic, "offline", retain=True, event=False)
        for info, _ in list(self._inflight):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._connected:  # without a broker nothing more will be acknowledged
                break
            try:
                info.wait_for_publish(remaining)
            except (RuntimeError, ValueError):  # not queued any more (connection gone)
                break
        self._client.disconnect()
        self._client.loop_stop()
        with self._lock:
            self._settle()
            self._expire()
            self.undelivered = sum(1 for _, event in self._inflight if event) + \
                sum(1 for p in self._buffer if p.event)
        self._presence.close()
        lost = self.dropped + self.undelivered
        if lost:
            self.log(f"{lost} of {self.events} event(s) did not reach the broker {self.target.address} "
                     f"({self.dropped} dropped after waiting {self.target.buffer_seconds:g} s, "
                     f"{self.undelivered} unsent at the end)")

    def __enter__(self) -> MqttPublisher:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def connected(self) -> bool:
        """Is the broker connected now?"""
        return self._connected

    def stats(self) -> dict[str, Any]:
        """Counts for the run's summary: events given, acknowledged by the broker, dropped, unsent."""
        with self._lock:
            self._settle()
            return {"broker": self.target.address, "topic": self.target.topic, "events": self.events,
                    "delivered": self.delivered, "dropped": self.dropped, "undelivered": self.undelivered,
                    "buffered": sum(1 for p in self._buffer if p.event)}

    # ------------------------------------------------------------------------------------------ the sink
    def __call__(self, event: dict[str, Any]) -> None:
        """Publish one face event (and the presence change it makes)."""
        kind = event.get("event")
        with self._lock:
            self.events += 1
        self._publish(f"{self.target.topic}/events", json.dumps(event, ensure_ascii=False), retain=False, event=True)
        if kind not in ("appeared", "renamed", "left"):
            return
        track = f"{event.get('session')}/{int(event.get('track', -1))}"  # track ids are per camera session
        name = None if kind == "left" else str(event.get("name") or UNKNOWN)
        with self._lock:
            states, new = self._presence.update(track, name)
        if new and self.target.discovery:
            self._publish_discovery(name)
        for person, present in states.items():
            self._publish_person(person, present, event)

    # ------------------------------------------------------------------------------------------ topics
    def person_topic(self, name: str) -> str:
        return f"{self.target.topic}/people/{slug(name)}"

    def discovery_topic(self, name: str) -> str:
        return f"{self.target.discovery}/binary_sensor/facegnet_{self._node}/{slug(name)}/config"

    def _publish_person(self, name: str, present: bool, event: dict[str, Any] | None) -> None:
        topic = self.person_topic(name)
        if event is not None:
            attributes = {"name": name, "event": event.get("event"), "time": event.get("time"),
                          "similarity": event.get("similarity"), "track": event.get("track"),
                          "source": self.source}
            self._publish(f"{topic}/attributes", json.dumps(attributes, ensure_ascii=False), retain=True, event=False)
        self._publish(topic, "ON" if present else "OFF", retain=True, event=False)

    def _publish_discovery(self, name: str) -> None:
        label = "Unknown face" if name == UNKNOWN else name
        config = {
            "name": label,
            "unique_id": f"facegnet_{self._node}_{slug(name)}",
            "object_id": f"facegnet_{self._node}_{slug(name)}",
            "device_class": "occupancy",
            "state_topic": self.person_topic(name),
            "json_attributes_topic": f"{self.person_topic(name)}/attributes",
            "availability": [{"topic": topic, "payload_available": "online", "payload_not_available": "offline"}
                             for topic in availability_topics(self.target.topic, self._presence.workers)],
            "availability_mode": "any",
            "device": {"identifiers": [f"facegnet_{self._node}"], "name": f"facegnet {self.target.topic}",
                       "manufacturer": "facegnet", "model": "face recognition"},
        }
        self._publish(self.discovery_topic(name), json.dumps(config, ensure_ascii=False), retain=True, event=False)

    # ------------------------------------------------------------------------------------------ sending
    def _publish(self, topic: str, payload: str, *, retain: bool, event: bool) -> None:
        with self._lock:
            pending = _Pending(self._clock(), topic, payload, retain, event)
            if self._connected:
                self._send(pending)
            else:
                self._buffer.append(pending)
                while len(self._buffer) > MAX_BUFFERED:
                    self._count_drop(self._buffer.popleft())
                self._expire()

    def _send(self, pending: _Pending) -> None:
        """Hand one message to paho (holding the lock); it resends QoS 1 messages after a reconnection."""
        info = self._client.publish(pending.topic, pending.payload, qos=_QOS, retain=pending.retain)
        self._inflight.append((info, pending.event))
        if len(self._inflight) > 256:
            self._settle()

    def _settle(self) -> None:
        """Count acknowledged events and forget their messages (holding the lock)."""
        waiting = []
        for info, event in self._inflight:
            if _published(info):
                self.delivered += event
            else:
                waiting.append((info, event))
        self._inflight = waiting

    def _expire(self) -> None:
        """Drop buffered messages older than the buffer allows (holding the lock); report the first drop."""
        limit = self._clock() - self.target.buffer_seconds
        while self._buffer and self._buffer[0].queued < limit:
            self._count_drop(self._buffer.popleft())

    def _count_drop(self, pending: _Pending) -> None:
        if not pending.event:
            return  # states and discovery are published again on reconnection
        self.dropped += 1
        if not self._outage_reported:
            self._outage_reported = True
            self.log(f"broker {self.target.address} away for more than {self.target.buffer_seconds:g} s: "
                     "dropping the oldest events (counted in the summary)")

    # ------------------------------------------------------------------------------------------ paho callbacks
    def _on_connect(self, client, userdata, flags, reason_code, properties=None) -> None:
        if getattr(reason_code, "is_failure", False):  # a wrong password, say: said once, retried quietly
            if not self._refusal_reported:
                self._refusal_reported = True
                self.log(f"broker {self.target.address} refused the connection: {reason_code}")
            return
        with self._lock:  # before any new event: what waited goes first, in order
            again = self._ever_connected.is_set()
            self._connected = True
            self._outage_reported = False
            self._expire()
            waiting, self._buffer = list(self._buffer), deque()
            # What a subscriber that joins later should find: online, discovery configs, present/absent states
            # (the last two from the announcer alone when processes share the presence).
            self._publish(self._status_topic, "offline" if self._closed else "online", retain=True, event=False)
            announcer = self._presence.announcer()
            if self.target.discovery:  # every name from the announcer; from another, those enrolled since
                names = self._presence.to_announce(everyone=announcer)
                configs = {self.discovery_topic(name) for name in names}
                waiting = [p for p in waiting if p.topic not in configs]  # a config that waited is sent afresh
                for name in names:
                    self._publish_discovery(name)
            if announcer and not again:
                for name, present in self._presence.states().items():
                    self._publish_person(name, present, None)
            for pending in waiting:
                self._send(pending)
        if again:
            self.log(f"reconnected to {self.target.address}; sent {sum(p.event for p in waiting)} buffered event(s)")
        self._ever_connected.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties=None) -> None:
        with self._lock:
            was, self._connected = self._connected, False
            closed = self._closed
        if was and not closed:
            self.log(f"lost the broker {self.target.address}; events wait up to {self.target.buffer_seconds:g} s "
                     "for it while recognition goes on")


__all__ = ["DEFAULT_BUFFER_SECONDS", "PASSWORD_ENV", "MqttPublisher", "MqttTarget", "availability_topics",
           "new_client", "require_client", "slug", "status_topic"]
