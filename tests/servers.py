"""``facegnet serve`` processes that tests start: on a free loopback port, waited for until ``/health`` answers,
and stopped with every process below them (each is started as its own process group); which processes those
are (its workers), from /proc."""
from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path

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


def server_processes(pid: int) -> list[int]:
    """A server's process and every process below it (its workers), from /proc."""
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        try:
            todo += [int(c) for c in Path(f"/proc/{current}/task/{current}/children").read_text().split()]
        except OSError:  # it ended meanwhile
            pass
    return out


def serving_process(connection: http.client.HTTPConnection, pids: list[int]) -> int | None:
    """Which of ``pids`` holds the server's end of this client connection (/proc/net/tcp and its fds)."""
    ours = connection.sock.getsockname()[1]
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[2].rsplit(":", 1)[1], 16) == ours:  # its remote end is our port
                inodes.add(f"socket:[{fields[9]}]")
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                if os.readlink(f"/proc/{pid}/fd/{fd}") in inodes:
                    return pid
        except OSError:
            continue
    return None


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

