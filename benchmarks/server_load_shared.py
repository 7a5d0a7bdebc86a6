#!/usr/bin/env python3
"""Two ``facegnet serve`` processes on one PostgreSQL gallery against one, under the same load, in one run
(``python benchmarks/server_load.py --servers 2 --database postgresql://…``); writes
benchmarks/results/server_load_shared.{json,md}.

For each layout (one server, then ``--servers`` servers) a fresh database is made next to the one named
(``CREATE DATABASE``: the role needs that right) and dropped at the end; ``--people`` LFW people are enrolled
through the servers, then for ``--seconds`` ``--clients`` threads identify LFW photos back to back, spread over the
servers in turn, while one more thread enrolls new people one photo per request, also in turn. The one server
gets ``--threads`` × ``--servers`` threads, each of the servers ``--threads``: the same CPU budget. Reported for each
layout: requests per second, p50/p99 latency, errors, whether every server lists every template the enrolments
reported (none lost), and how much CPU the PostgreSQL server spent per request (its processes' CPU time, read
from /proc when it runs on this machine), from which the number of server processes one PostgreSQL core could
feed follows.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx

from server_load import AUTH, HERE, TIMEOUT, TOKEN, free_port, lfw_people, run_all, stop, summary


def postgres_cpu_seconds() -> float | None:
    """CPU seconds (user + system) used so far by every ``postgres`` process of this machine (None: none)."""
    total, found = 0.0, False
    tick = os.sysconf("SC_CLK_TCK")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        if name != "postgres":
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
        found = True
    return total if found else None


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


def scratch_database(url: str, name: str) -> str:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    return with_database(url, name)


def drop_database(url: str, name: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def start_servers(database: str, count: int, threads: int) -> tuple[list[subprocess.Popen], list[str]]:
    env = {**os.environ, "PYTHONPATH": str(HERE.parent)}
    servers, urls = [], []
    for _ in range(count):
        port = free_port()
        servers.append(subprocess.Popen(
            [sys.executable, "-m", "facegnet", "serve", "--database", database, "--host", "127.0.0.1",
             "--port", str(port), "--token", TOKEN, "--workers", "1", "--threads", str(threads)],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True))
        urls.append(f"http://127.0.0.1:{port}")
    deadline = time.monotonic() + 300
    for server, url in zip(servers, urls):
        while True:
            if server.poll() is not None:
                for other in servers:
                    stop(other)
                raise SystemExit(f"a server stopped: {server.stderr.read().decode()}")
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                for other in servers:
                    stop(other)
                raise SystemExit("the servers did not start within 300 s")
            time.sleep(0.3)
    return servers, urls


def run_layout(database: str, count: int, threads: int, args: argparse.Namespace) -> dict:
    """One layout: ``count`` servers of ``threads`` threads on ``database`` under the load; its figures."""
    folders = lfw_people(3)
    enrolled, newcomers = folders[: args.people], folders[args.people:]
    probes = [sorted(f.glob("*.jpg"))[2].read_bytes() for f in enrolled]
    servers, urls = start_servers(database, count, threads)
    try:
        for n, folder in enumerate(enrolled):  # two photos each, through the servers in turn
            files = [("file", (p.name, p.read_bytes(), "image/jpeg")) for p in sorted(folder.glob("*.jpg"))[:2]]
            httpx.post(f"{urls[n % count]}/api/people/{folder.name}/photos", files=files, headers=AUTH,
                       timeout=TIMEOUT).raise_for_status()
        for url in urls:  # warm every server
            httpx.post(f"{url}/api/identify", files=[("file", ("warm.jpg", probes[0], "image/jpeg"))],
                       headers=AUTH, timeout=TIMEOUT)
        before = sum(p["templates"] for p in httpx.get(f"{urls[0]}/api/people", headers=AUTH).json()["people"])

        identify_latency: list[float] = []
        identify_errors: list[str] = []
        enroll_latency: list[float] = []
        enroll_errors: list[str] = []
        added: list[int] = []
        lock = threading.Lock()
        stop_at = time.perf_counter() + args.seconds

        def identify_client(n: int) -> None:
            clients = [httpx.Client(base_url=url, headers=AUTH, timeout=TIMEOUT) for url in urls]
            i = n
            while time.perf_counter() < stop_at:
                files = [("file", ("probe.jpg", probes[i % len(probes)], "image/jpeg"))]
                t0 = time.perf_counter()
                try:
                    r = clients[i % count].post("/api/identify", files=files)
                    ok, body = r.status_code == 200, r.json()
                except (httpx.HTTPError, ValueError) as exc:
                    ok, body = False, {"error": repr(exc)}
                with lock:
                    identify_latency.append(time.perf_counter() - t0)
                    if not ok:
                        identify_errors.append(str(body.get("error")))
                i += args.clients
            for c in clients:
                c.close()

        def enroll_client() -> None:
            for n, folder in enumerate(newcomers):
                if time.perf_counter() >= stop_at:
                    break
                photo = sorted(folder.glob("*.jpg"))[0]
                t0 = time.perf_counter()
                try:
                    r = httpx.post(f"{urls[n % count]}/api/people/{folder.name}/photos", headers=AUTH,
                                   files=[("file", (photo.name, photo.read_bytes(), "image/jpeg"))], timeout=TIMEOUT)
                    body = r.json()
                    ok = r.status_code in (200, 201, 422)  # 422: no usable face in the photo
                except (httpx.HTTPError, ValueError) as exc:
                    ok, body = False, {"error": repr(exc)}
                with lock:
                    enroll_latency.append(time.perf_counter() - t0)
                    if ok:
                        added.append(len(body.get("added", [])))
                    else:
                        enroll_errors.append(str(body.get("error")))

        workers = [threading.Thread(target=identify_client, args=(n,)) for n in range(args.clients)]
        workers.append(threading.Thread(target=enroll_client))
        cpu_before = postgres_cpu_seconds()
        elapsed = run_all(workers)
        cpu_after = postgres_cpu_seconds()
        time.sleep(1.0)  # every server has followed the last change
        after = [sum(p["templates"] for p in httpx.get(f"{url}/api/people", headers=AUTH).json()["people"])
                 for url in urls]
    finally:
        for server in servers:
            stop(server)
    identify = summary(identify_latency, identify_errors, elapsed)
    enroll = summary(enroll_latency, enroll_errors, elapsed)
    enroll["templates_added"] = int(sum(added))
    requests = identify["requests"] + enroll["requests"]
    pg_cpu = None if cpu_before is None or cpu_after is None else cpu_after - cpu_before
    return {
        "servers": count, "threads_per_server": threads, "seconds": round(elapsed, 2),
        "identify": identify, "enroll": enroll,
        "templates_before": before, "templates_after_per_server": after,
        "no_template_lost": all(a == before + enroll["templates_added"] for a in after),
        "postgres_cpu_s": None if pg_cpu is None else round(pg_cpu, 3),
        "postgres_cpu_ms_per_request": None if pg_cpu is None or not requests else round(1000 * pg_cpu / requests, 3),
    }


def run(args: argparse.Namespace) -> None:
    """The one-server and the ``--servers`` layouts, one after the other, and the report."""
    out = HERE / "results" / "server_load_shared"
    layouts = []
    # The same CPU budget in both: one server with every thread against --servers servers sharing them.
    for count, threads in ((1, args.threads * args.servers), (args.servers, args.threads)):
        name = f"facegnet_load_{count}"
        database = scratch_database(args.database, name)
        try:
            layouts.append(run_layout(database, count, threads, args))
        finally:
            drop_database(args.database, name)
    one, many = layouts
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    per_request = many["postgres_cpu_ms_per_request"]
    rate_per_server = many["identify"]["requests_per_s"] / args.servers
    result = {
        "meta": {
            "command": f"python benchmarks/server_load.py --servers {args.servers} --database URL --seconds "
                       f"{args.seconds:g} --clients {args.clients} --people {args.people} --threads {args.threads}",
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cpu": cpu, "cpus": os.cpu_count(),
            "load_average_at_end": [round(v, 2) for v in os.getloadavg()], "platform": platform.platform(),
        },
        "layouts": layouts,
        "servers_vs_one_identify": round(many["identify"]["requests_per_s"] / one["identify"]["requests_per_s"], 3),
        # One PostgreSQL core's second divided by what one server process's requests cost it per second.
        "server_processes_per_postgres_core": None if not per_request or not rate_per_server else
        int(1000 / (per_request * rate_per_server)),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))


def markdown(result: dict) -> str:
    meta = result["meta"]
    rows = []
    for layout in result["layouts"]:
        for kind in ("identify", "enroll"):
            r = layout[kind]
            rows.append(f"| {layout['servers']} × {layout['threads_per_server']} | {kind} | {r['requests']} | "
                        f"{r['requests_per_s']} | {r['p50_ms']} | {r['p99_ms']} | {r['errors']} | "
                        f"{layout['postgres_cpu_ms_per_request']} |")
    lost = ", ".join(f"{lay['servers']} server(s): "
                     + ("none lost" if lay["no_template_lost"] else "**templates lost**")
                     + f" ({lay['templates_before']} + {lay['enroll']['templates_added']} enrolled = "
                     f"{lay['templates_after_per_server']} listed by each server)" for lay in result["layouts"])
    feeds = result["server_processes_per_postgres_core"]
    return "\n".join([
        "# Servers sharing one PostgreSQL gallery under load (loopback)",
        "",
        f"`{meta['command']}`, {meta['date']}, {meta['cpus']} × {meta['cpu']}; load average at the end "
        + ", ".join(map(str, meta["load_average_at_end"])) + " (the machine was shared with other work).",
        "",
        "| servers × threads | requests | count | per second | p50 ms | p99 ms | errors "
        "| PostgreSQL CPU ms / request |",
        "|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        f"Templates: {lost}. Identify throughput, {result['layouts'][1]['servers']} servers against 1: "
        f"**{result['servers_vs_one_identify']}×** with the same threads in all (one server with all of them "
        "against several sharing them, on the same cores; on a CPU shared with other work, more processes also "
        "win a larger share of it). More servers pay on more machines. PostgreSQL's CPU per request, measured "
        "from its processes' CPU time (every request, background work included), "
        + (f"puts one PostgreSQL core at about **{feeds:,} server processes** running at this rate." if feeds else
           "was not measured (PostgreSQL does not run on this machine)."),
        "",
    ])


__all__ = ["run"]
