"""Who is in view: the name each live track shows, and from it whether each person is present.

:class:`Presence` keeps it in memory, for one process (``facegnet identify --camera …``). A server with several
worker processes (``facegnet serve --workers N``) hands a camera session's frames to any of them, so a face may
appear in one worker and leave in another, and one person may be in view of two sessions served by different
workers: :class:`SharedPresence` keeps the same state in a file that every worker reads and changes under a lock,
and lets one worker at a time be the announcer (the one that publishes Home Assistant discovery and the
states a subscriber finds on connecting).
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

    def update(self, track: str, name: str | None) -> tuple[dict[str, bool], bool]:
        """Track ``track`` now shows ``name`` (None: it left). Returns whether each person it concerns (the
        name it showed before, the one it shows now) is present afterwards, and whether ``name`` is new (never
        known before: it needs its discovery config)."""
        return _update(self._tracks, self._names, track, name)

    def states(self) -> dict[str, bool]:
        """Every known person: present or not."""
        return _states(self._tracks, self._names)

    def announcer(self) -> bool:
        """Whether this process publishes discovery and first states: always, when it is the only one."""
        return True

    def close(self) -> None:
        """Let the announcer's role go (nothing to let go in memory)."""


class SharedPresence(Presence):
    """:class:`Presence` in ``folder``, shared by the processes that serve one set of camera sessions.

    The state is a small JSON file changed under a file lock; the announcer is whichever process holds a
    second lock, taken without waiting and kept until :meth:`close` (or the process's end, when the kernel
    drops it and the next process to connect takes the role).
    """

    def __init__(self, folder: str | Path, people: Iterable[str] = ()) -> None:
        super().__init__(people)
        self.folder = Path(folder)
        # Names with a dot: never those of a camera session's files (its id has none) in the same folder.
        self._file = self.folder / "presence.state.json"
        self._lock = FileLock(self.folder / "presence.state.lock")
        self._announcer: int | None = None  # the descriptor holding the announcer's lock
        with self._lock.hold():  # the enrolled names each process starts with
            tracks, names = self._read()
            self._write(tracks, list(dict.fromkeys([*names, *self._names])))

    def update(self, track: str, name: str | None) -> tuple[dict[str, bool], bool]:
        with self._lock.hold():
            tracks, names = self._read()
            result = _update(tracks, names, track, name)
            self._write(tracks, names)
        return result

    def states(self) -> dict[str, bool]:
        with self._lock.hold():
            return _states(*self._read())

    def announcer(self) -> bool:
        # A bare flock, not a FileLock: the role belongs to the process, whichever thread asks or lets it go.
        if self._announcer is None:
            import fcntl  # POSIX: several worker processes are a POSIX server's

            fd = os.open(self.folder / "presence.announcer.lock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return False
            self._announcer = fd
        return True

    def close(self) -> None:
        if self._announcer is not None:
            os.close(self._announcer)  # closing releases the lock: the next process to connect announces
            self._announcer = None
        self._lock.close()

    def _read(self) -> tuple[dict[str, str], list[str]]:
        try:
            data = json.loads(self._file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}, list(self._names)
        return dict(data["tracks"]), list(data["names"])

    def _write(self, tracks: dict[str, str], names: list[str]) -> None:
        fd, scratch = tempfile.mkstemp(dir=self.folder, prefix=".presence-")
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump({"tracks": tracks, "names": names}, out, ensure_ascii=False)
        os.replace(scratch, self._file)


def _update(tracks: dict[str, str], names: list[str], track: str, name: str | None) -> tuple[dict[str, bool], bool]:
    changed = []
    if (before := tracks.pop(track, None)) is not None:
        changed.append(before)
    new = False
    if name is not None:
        tracks[track] = name
        changed.append(name)
        if name not in names:
            names.append(name)
            new = True
    shown = set(tracks.values())
    return {n: n in shown for n in dict.fromkeys(changed)}, new


def _states(tracks: dict[str, str], names: list[str]) -> dict[str, bool]:
    shown = set(tracks.values())
    return {n: n in shown for n in sorted(names)}


__all__ = ["Presence", "SharedPresence"]
