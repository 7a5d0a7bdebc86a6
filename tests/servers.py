"""``facegnet serve`` processes that tests start: on a free loopback port, waited for until ``/health`` answers,
and stopped with every process below them (each is started as its own process group)."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable

from conftest import ROOT


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(*args: str, env: dict[str, str] | None = None) -> tuple[subprocess.Popen, str]:
    """``python -m facegnet serve ARGS --port P`` on a free port; returns the process and its base URL.

    The environment is this process's (read now, so the session's private export cache is in it) with the
    checkout on PYTHONPATH, plus ``env``."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "facegnet", "serve", *args, "--port", str(port)],
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, start_new_session=True)
    return process, f"http://127.0.0.1:{port}"


def wait_healthy(process: subprocess.Popen, url: str, deadline: float) -> None:
    """Wait until ``url/health`` answers 200; fails with the server's stderr if it exits, or at ``deadline``
    (a ``time.monotonic()`` value)."""
    import httpx  # the test extra: test modules skip without it before they start a server

    while True:
        assert process.poll() is None, process.stderr.read().decode()
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, f"the server at {url} did not start"
        time.sleep(0.3)


def stop_servers(processes: Iterable[subprocess.Popen]) -> None:
    """SIGTERM to each server's process group (the server and its workers: groups we started), SIGKILL to any
    still running 20 s later."""
    processes = list(processes)
    for process in processes:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
    for process in processes:
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)

