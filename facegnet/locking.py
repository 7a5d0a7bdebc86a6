"""One file lock for the whole package: exclusive between processes (``flock``) and between threads.

``flock`` locks belong to an open file, not to a thread, so two threads sharing one descriptor would both
"hold" it. :class:`FileLock` therefore pairs the file lock with a re-entrant thread lock: a thread that holds
it may take it again (nested writes), other threads of the process wait for it like other processes do.
The holder's pid is written into the lock file so that a refusal can name it.

    >>> with FileLock("gallery/gallery.lock").hold(timeout=60):
    ...     ...  # the only writer, in any thread of any process

On systems without ``fcntl`` (Windows) only the thread lock is taken. :class:`ExclusiveLock` is the pairing
without the file, for locks between processes held elsewhere (the PostgreSQL gallery's advisory lock).
"""
from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

#: Seconds between attempts while waiting for another process.
POLL_SECONDS = 0.05


class LockTimeout(Exception):
    """The lock stayed taken for the whole timeout; ``holder`` is the pid written by its holder, or "?"."""

    def __init__(self, path: Path, holder: str) -> None:
        super().__init__(f"{path} is held by pid {holder}")
        self.path = path
        self.holder = holder


class ExclusiveLock:
    """An exclusive lock shared by threads and processes: a re-entrant thread lock paired with a lock between
    processes, which a subclass takes (:meth:`_take`) and drops (:meth:`_drop`, :meth:`_close`) with the
    outermost level. ``path`` is what a refusal names."""

    path: Any

    def __init__(self) -> None:
        self._thread_lock = threading.RLock()
        self._depth = 0  # nesting of the thread that holds it (only that thread reads or writes it)

    @property
    def held(self) -> bool:
        """Whether some thread of this process holds the lock through this object."""
        return self._depth > 0

    def acquire(self, timeout: float | None = None) -> None:
        """Take the lock, waiting at most ``timeout`` seconds (None: for ever). Raises :class:`LockTimeout`."""
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        if not self._thread_lock.acquire(timeout=-1 if deadline is None else max(0.0, timeout or 0.0)):
            raise LockTimeout(self.path, self._thread_holder())  # another thread of this process holds it
        if self._depth:  # re-entered by the thread that holds it
            self._depth += 1
            return
        try:
            self._take(deadline)
        except BaseException:
            self._thread_lock.release()
            raise
        self._depth = 1

    def release(self) -> None:
        """Release one level of the lock; the lock between processes goes with the outermost level."""
        if not self._depth:
            raise RuntimeError(f"{self.path} is not locked")
        self._depth -= 1
        if not self._depth:
            self._drop()
        self._thread_lock.release()

    @contextmanager
    def hold(self, timeout: float | None = None) -> Iterator[None]:
        """``with lock.hold(timeout):`` the lock for the duration of the block."""
        self.acquire(timeout)
        try:
            yield
        finally:
            self.release()

    def close(self) -> None:
        """Let go of what holds the lock between processes (releasing the lock if held)."""
        with self._thread_lock:
            self._close()
            self._depth = 0

    # ------------------------------------------------------------------------------------------------
    def _thread_holder(self) -> str:
        """Who a refusal names when another thread of this process holds the lock."""
        return "?"

    def _take(self, deadline: float | None) -> None:
        """Take the lock between processes by ``deadline`` (``time.monotonic()``) or raise LockTimeout."""
        raise NotImplementedError

    def _drop(self) -> None:
        """Release the lock between processes."""
        raise NotImplementedError

    def _close(self) -> None:
        """Close what holds the lock between processes."""
        raise NotImplementedError


class FileLock(ExclusiveLock):
    """An exclusive, re-entrant (per thread) lock on a file, shared by threads and processes.

    Args:
        path: the lock file; created owner-only if missing, never deleted (deleting a lock file races).
    """

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        self.path = Path(path)
        self._fd: int | None = None

    def holder(self) -> str:
        """The pid the current holder wrote into the lock file ("?" when unknown)."""
        try:
            return self.path.read_text(errors="replace").strip() or "?"
        except OSError:
            return "?"

    # ------------------------------------------------------------------------------------------------
    def _thread_holder(self) -> str:
        return str(os.getpid())

    def _drop(self) -> None:
        if self._fd is not None and fcntl is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def _close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the last descriptor drops the flock too
            self._fd = None

    def _take(self, deadline: float | None) -> None:
        if fcntl is None:
            return
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        while True:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if deadline is not None and time.monotonic() >= deadline:
                    raise LockTimeout(self.path, self.holder()) from None
                time.sleep(POLL_SECONDS)
        # Who holds it, for the refusal message of whoever waits (best effort: it is only a hint).
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"{os.getpid()}\n".encode(), 0)


@contextmanager
def locked(path: str | Path, timeout: float | None = None) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` for the block (a one-off :class:`FileLock`, closed afterwards)."""
    lock = FileLock(path)
    try:
        with lock.hold(timeout):
            yield
    finally:
        lock.close()


__all__ = ["ExclusiveLock", "FileLock", "LockTimeout", "locked", "POLL_SECONDS"]
