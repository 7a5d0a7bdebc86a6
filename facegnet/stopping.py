"""SIGTERM, the way service managers (systemd, Docker, ``kill``) stop a program, handled like Ctrl-C.

Python's default action for SIGTERM ends the process at once: no ``finally``, no ``atexit``. So a live loop would
not close its recording, and a server would leave its private folder of photo copies behind (uvicorn shuts down
gracefully on SIGTERM but then raises the signal again). With :func:`sigterm_as_interrupt` it raises
:class:`KeyboardInterrupt` instead, and everything unwinds as after Ctrl-C.
"""
from __future__ import annotations

import signal
import threading
from collections.abc import Callable

__all__ = ["sigterm_as_interrupt"]


def sigterm_as_interrupt() -> Callable[[], None]:
    """Make SIGTERM raise KeyboardInterrupt in the main thread; returns the undo (a no-op off the main thread,
    where signal handlers cannot be set)."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def handler(signum, frame):  # noqa: ARG001
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, handler)
    return lambda: signal.signal(signal.SIGTERM, old)
