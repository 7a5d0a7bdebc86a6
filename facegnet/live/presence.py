"""Who is in view: the name each live track shows, and from it whether each person is present.

:class:`Presence` keeps it in memory, for one process (``facegnet identify --camera …``). A server with several
worker processes (``facegnet serve --workers N``) hands a camera session's frames to any of them, so a face may
appear in one worker and leave in another, and one person may be in view of two sessions served by different
workers: :class:`SharedPresence` keeps the same state in a file that every worker reads and changes under a lock,
lets one worker at a time be the announcer (the one that publishes Home Assistant discovery and the
states a subscriber finds on connecting), and gives each worker a number of its own, from 1 (the one of its
availability topic, which must outlive a worker that crashes: the worker that replaces it takes the same number).
"""
from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from facegnet.gallery import UNKNOWN
from facegnet.locking import FileLock


class Presence:
    """The name of each track in view (a track: its camera session and track id), in this process's memory.

    Args:
        people: the names known from the start (the enrolled people; ``unknown`` is always one).
    """

    def __init__(self, people: Iterable[str] = ()) -> None:
        self._tracks: dict[str, str] = {}
        self._names: list[str] = list(dict.fromkeys([*people, UNKNOWN]))
        self._announced: list[str] = []

    def update(self, track: str, name: str | None) -> tuple[dict[str, bool], bool]:
        """Track ``track`` now shows ``name`` (None: it left). Returns whether each person it concerns (the
        name it showed before, the one it shows now) is present afterwards, and whether ``name`` still needs
        its discovery config (none was published for it yet; from now on it counts as published)."""
        return _update(self._tracks, self._names, self._announced, track, name)

    def states(self) -> dict[str, bool]:
        """Every known person: present or not."""
        return _states(self._tracks, self._names)

    def to_announce(self, everyone: bool) -> list[str]:
        """The names to publish discovery configs for now, counted as published from now on: every known
        name (``everyone``: the announcer on connecting), or those none was published for yet."""
        return _to_announce(self._names, self._announced, everyone)

    #: How many processes share this presence (their numbers are 1 to this); None: this process alone.
    workers: int | None = None

    def announcer(self) -> bool:
        """Whether this process publishes discovery and first states: always, when it is the only one."""
        return True

    def worker(self) -> int | None:
        """This process's number among the processes sharing the presence; None when it is the only one."""
        return None

    def close(self) -> None:
        """Let the announcer's role and the worker's number go (nothing to let go in memory)."""


class SharedPresence(Presence):
    """:class:`Presence` in ``folder``, shared by the ``workers`` processes that serve one set of camera sessions.

    The state is a small JSON file changed under a file lock; the announcer is whichever process holds a
    second lock, taken without waiting and kept until :meth:`close` (or the process's end, when the kernel
    drops it and the next process to connect takes the role). A worker's number is held the same way.
    """

    def __init__(self, folder: str | Path, people: Iterable[str] = (), *, workers: int) -> None:
        super().__init__(people)
        self.folder = Path(folder)
        self.workers = workers
        self._number: tuple[int, int] | None = None  # (this process's number, the descriptor holding it)
        # Names with a dot: never those of a camera session's files (its id has none) in the same folder.
        self._file = self.folder / "presence.state.json"
        self._lock = FileLock(self.folder / "presence.state.lock")
        self._announcer: int | None = None  # the descriptor holding the announcer's lock
        with self._lock.hold():  # the enrolled names each process starts with
            tracks, names, announced = self._read()
            # A worker started after the announcer connected may bring people enrolled since: they stay
            # unannounced until a worker publishes their discovery config (on connecting, or when seen).
            self._write(tracks, list(dict.fromkeys([*names, *self._names])), announced)

    def update(self, track: str, name: str | None) -> tuple[dict[str, bool], bool]:
        with self._lock.hold():
            tracks, names, announced = self._read()
            result = _update(tracks, names, announced, track, name)
            self._write(tracks, names, announced)
        return result

    def states(self) -> dict[str, bool]:
        with self._lock.hold():
            tracks, names, _ = self._read()
            return _states(tracks, names)

    def to_announce(self, everyone: bool) -> list[str]:
        with self._lock.hold():  # read and mark in one step: two workers never publish the same name at once
            tracks, names, announced = self._read()
            result = _to_announce(names, announced, everyone)
            self._write(tracks, names, announced)
        return result

    def announcer(self) -> bool:
        if self._announcer is None:
            self._announcer = self._hold("presence.announcer.lock")
        return self._announcer is not None

    def worker(self) -> int:
        """The lowest number, from 1, that no other live process holds; this process's until :meth:`close`.
        A worker that dies lets its number go, and the one that replaces it takes it again."""
        number = 1
        while self._number is None:
            fd = self._hold(f"presence.worker-{number}.lock")
            if fd is not None:
                self._number = number, fd
            number += 1
        return self._number[0]

    def close(self) -> None:
        # Closing a descriptor releases its lock: the next process to connect announces or takes the number.
        for fd in (self._announcer, self._number[1] if self._number else None):
            if fd is not None:
                os.close(fd)
        self._announcer = self._number = None
        self._lock.close()

    def _hold(self, name: str) -> int | None:
        """A descriptor holding the lock file ``name`` (taken without waiting), or None if another process
        holds it. A bare flock, not a FileLock: it belongs to the process, whichever thread asks or lets go."""
        import fcntl  # POSIX: several worker processes are a POSIX server's

        fd = os.open(self.folder / name, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        return fd

    def _read(self) -> tuple[dict[str, str], list[str], list[str]]:
        try:
            data = json.loads(self._file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}, list(self._names), []
        return dict(data["tracks"]), list(data["names"]), list(data.get("announced", []))

    def _write(self, tracks: dict[str, str], names: list[str], announced: list[str]) -> None:
        fd, scratch = tempfile.mkstemp(dir=self.folder, prefix=".presence-")
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump({"tracks": tracks, "names": names, "announced": announced}, out, ensure_ascii=False)
        os.replace(scratch, self._file)


def _update(tracks: dict[str, str], names: list[str], announced: list[str], track: str,
            name: str | None) -> tuple[dict[str, bool], bool]:
    changed = []
    if (before := tracks.pop(track, None)) is not None:
        changed.append(before)
    new = False
    if name is not None:
        tracks[track] = name
        changed.append(name)
        if name not in names:
            names.append(name)
        if name not in announced:
            announced.append(name)
            new = True
    shown = set(tracks.values())
    return {n: n in shown for n in dict.fromkeys(changed)}, new


def _to_announce(names: list[str], announced: list[str], everyone: bool) -> list[str]:
    result = list(names) if everyone else [n for n in names if n not in announced]
    announced.extend(n for n in result if n not in announced)
    return result


def _states(tracks: dict[str, str], names: list[str]) -> dict[str, bool]:
    shown = set(tracks.values())
    return {n: n in shown for n in sorted(names)}


__all__ = ["Presence", "SharedPresence"]
