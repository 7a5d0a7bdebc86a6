#!/usr/bin/env python3
"""Load on ``facegnet serve`` over loopback; writes benchmarks/results/server_load.{json,md}.

A real server process (``python -m facegnet serve`` on 127.0.0.1, a fresh gallery of ``--people`` LFW people
enrolled through the API) is driven for ``--seconds`` by ``--clients`` threads that identify LFW photos back
to back while one more thread enrolls new people, one photo per request. Reported: requests per second and
p50/p99 latency of each kind, every error, and whether the gallery holds exactly the templates the enrolments
reported (no lost template). Bounded: loopback only, a fixed duration, a timeout on every request, and the
server is stopped at the end. The peer: the same probes identified through the Python API
(``Gallery.identify``) in this process, one at a time, on the same gallery, right after the server stopped;
the ratio says what HTTP, uploads and concurrency cost.

    python benchmarks/server_load.py [--seconds 30] [--clients 8] [--workers 1] [--threads 2]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as `facegnet serve` does, for the in-process peer below

HERE = Path(__file__).resolve().parent
LFW = HERE.parent.parent / "shared" / "data" / "lfw" / "images"
TOKEN = "load-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
TIMEOUT = 120.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def lfw_people(minimum: int) -> list[Path]:
    """LFW people folders with at least ``minimum`` photos, alphabetical."""
    if not LFW.is_dir():
        raise SystemExit(f"LFW photos not found at {LFW}")
    return [p for p in sorted(LFW.iterdir()) if p.is_dir() and len(list(p.glob("*.jpg"))) >= minimum]


def start_server(gallery: Path, port: int, workers: int, threads: int) -> subprocess.Popen:
    command = [sys.executable, "-m", "facegnet", "serve", "--gallery", str(gallery), "--host", "127.0.0.1",
               "--port", str(port), "--token", TOKEN, "--workers", str(workers), "--threads", str(threads)]
    env = {**os.environ, "PYTHONPATH": str(HERE.parent)}
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              start_new_session=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server stopped: {server.stderr.read().decode()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return server
        except httpx.TransportError:
            time.sleep(0.3)
    stop(server)
    raise SystemExit("the server did not start within 300 s")


def stop(server: subprocess.Popen) -> None:
    if server.poll() is None:
        os.killpg(server.pid, signal.SIGTERM)  # the server and its workers: the group we started
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)


def summary(latencies: list[float], errors: list[str], seconds: float) -> dict:
    ms = np.array(latencies) * 1000.0
    return {
        "requests": len(latencies),
        "errors": len(errors),
        "first_errors": errors[:5],
        "requests_per_s": round(len(latencies) / seconds, 2),
        "p50_ms": round(float(np.percentile(ms, 50)), 1) if len(ms) else None,
        "p99_ms": round(float(np.percentile(ms, 99)), 1) if len(ms) else None,
        "max_ms": round(float(ms.max()), 1) if len(ms) else None,
    }


def direct_identify(gallery_dir: Path, probes: list[bytes], seconds: float, threads: int) -> dict:
    """Identifications per second through the Python API, one at a time (the server's peer)."""
    import io

    from PIL import Image

    from facegnet.gallery import Gallery
    from facegnet.recognizer import FaceRecognizer

    images = [np.asarray(Image.open(io.BytesIO(p)).convert("RGB")) for p in probes]
    with Gallery(gallery_dir, recognizer=FaceRecognizer(threads=threads)) as gallery:
        gallery.identify(images[0])  # load the models
        latencies = []
        stop_at = time.perf_counter() + seconds
        while time.perf_counter() < stop_at:
            t0 = time.perf_counter()
            gallery.identify(images[len(latencies) % len(images)])
            latencies.append(time.perf_counter() - t0)
    return summary(latencies, [], sum(latencies))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=30.0, help="how long the load lasts")
    parser.add_argument("--clients", type=int, default=8, help="concurrent identifying clients")
    parser.add_argument("--people", type=int, default=20, help="people enrolled before the load")
    parser.add_argument("--workers", type=int, default=1, help="server worker processes")
    parser.add_argument("--threads", type=int, default=2, help="torch threads per server process")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "server_load")
    args = parser.parse_args()

    folders = lfw_people(3)
    enrolled, newcomers = folders[: args.people], folders[args.people:]
    probes = [sorted(f.glob("*.jpg"))[2].read_bytes() for f in enrolled]  # photos not enrolled
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="facegnet-load-") as tmp:
        started = time.perf_counter()
        server = start_server(Path(tmp) / "gallery", port, args.workers, args.threads)
        startup = time.perf_counter() - started
        try:
            with httpx.Client(base_url=url, headers=AUTH, timeout=TIMEOUT) as client:
                for folder in enrolled:  # two photos each, before the clock starts
                    files = [("file", (p.name, p.read_bytes(), "image/jpeg")) for p in sorted(folder.glob("*.jpg"))[:2]]
                    response = client.post(f"/api/people/{folder.name}/photos", files=files)
                    response.raise_for_status()
                before = sum(p["templates"] for p in client.get("/api/people").json()["people"])
                client.post("/api/identify", files=[("file", ("warm.jpg", probes[0], "image/jpeg"))])

            stop_at = time.perf_counter() + args.seconds
            identify_latency: list[float] = []
            identify_errors: list[str] = []
            enroll_latency: list[float] = []
            enroll_errors: list[str] = []
            added: list[int] = []
            named_right = [0]
            lock = threading.Lock()

            def identify_client(n: int) -> None:
                with httpx.Client(base_url=url, headers=AUTH, timeout=TIMEOUT) as c:
                    i = n
                    while time.perf_counter() < stop_at:
                        person = enrolled[i % len(enrolled)].name
                        files = [("file", ("probe.jpg", probes[i % len(probes)], "image/jpeg"))]
                        t0 = time.perf_counter()
                        try:
                            r = c.post("/api/identify", files=files)
                            ok, body = r.status_code == 200, r.json()
                        except (httpx.HTTPError, ValueError) as exc:
                            ok, body = False, {"error": repr(exc)}
                        elapsed = time.perf_counter() - t0
                        with lock:
                            identify_latency.append(elapsed)
                            if not ok:
                                identify_errors.append(str(body.get("error")))
                            elif body["faces"] and body["faces"][0]["name"] == person:
                                named_right[0] += 1
                        i += args.clients

            def enroll_client() -> None:
                with httpx.Client(base_url=url, headers=AUTH, timeout=TIMEOUT) as c:
                    for folder in newcomers:
                        if time.perf_counter() >= stop_at:
                            break
                        photo = sorted(folder.glob("*.jpg"))[0]
                        t0 = time.perf_counter()
                        try:
                            r = c.post(f"/api/people/{folder.name}/photos",
                                       files=[("file", (photo.name, photo.read_bytes(), "image/jpeg"))])
                            body = r.json()
                            ok = r.status_code in (200, 201) or r.status_code == 422  # 422: no usable face
                        except (httpx.HTTPError, ValueError) as exc:
                            ok, body = False, {"error": repr(exc)}
                        elapsed = time.perf_counter() - t0
                        with lock:
                            enroll_latency.append(elapsed)
                            if not ok:
                                enroll_errors.append(str(body.get("error")))
                            else:
                                added.append(len(body.get("added", [])))

            threads = [threading.Thread(target=identify_client, args=(n,)) for n in range(args.clients)]
            threads.append(threading.Thread(target=enroll_client))
            began = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            elapsed = time.perf_counter() - began
            with httpx.Client(base_url=url, headers=AUTH, timeout=TIMEOUT) as client:
                after = sum(p["templates"] for p in client.get("/api/people").json()["people"])
        finally:
            stop(server)
        peer = direct_identify(Path(tmp) / "gallery", probes, min(args.seconds, 15.0), args.threads)

    identify = summary(identify_latency, identify_errors, elapsed)
    identify["named_correctly"] = named_right[0]
    enroll = summary(enroll_latency, enroll_errors, elapsed)
    enroll["templates_added"] = int(sum(added))
    result = {
        "meta": {
            "command": f"python benchmarks/server_load.py --seconds {args.seconds:g} --clients {args.clients} "
            f"--people {args.people} --workers {args.workers} --threads {args.threads}",
            "seconds": round(elapsed, 2), "server_startup_s": round(startup, 1), "people_enrolled": args.people,
            "templates_before": before, "templates_after": after,
            "no_template_lost": after == before + enroll["templates_added"],
            "platform": platform.platform(), "cpus": os.cpu_count(),
            "load_average_at_end": [round(v, 2) for v in os.getloadavg()],
        },
        "identify": identify,
        "enroll": enroll,
        "python_api_identify": peer,
        "server_vs_python_api": round(identify["requests_per_s"] / peer["requests_per_s"], 3),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    args.out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))


def markdown(result: dict) -> str:
    meta = result["meta"]
    rows = []
    for kind, label in (("identify", "identify (HTTP)"), ("enroll", "enroll (HTTP)"),
                        ("python_api_identify", "peer: Gallery.identify in-process, one at a time")):
        r = result[kind]
        rows.append(f"| {label} | {r['requests']} | {r['requests_per_s']} | {r['p50_ms']} | {r['p99_ms']} "
                    f"| {r['max_ms']} | {r['errors']} |")
    return "\n".join([
        "# `facegnet serve` under load (loopback)",
        "",
        f"`{meta['command']}`: {meta['seconds']} s of load on a server over a gallery of "
        f"{meta['people_enrolled']} LFW people; {result['identify']['requests'] and 'identifying clients'} "
        "post one LFW photo per request, back to back, while one client enrolls new people one photo at a time.",
        "",
        "| requests | count | per second | p50 ms | p99 ms | max ms | errors |",
        "|---|---|---|---|---|---|---|",
        *rows,
        "",
        f"Templates before {meta['templates_before']}, enrolments reported {result['enroll']['templates_added']} "
        f"added, templates after {meta['templates_after']}: "
        + ("no template lost." if meta["no_template_lost"] else "**templates lost or duplicated**.")
        + f" Identify named the probe's person {result['identify']['named_correctly']} times of "
        f"{result['identify']['requests']} (the rest: 'unknown' below the card's identification threshold, or "
        "someone else). Server throughput / in-process throughput: "
        f"**{result['server_vs_python_api']}×** (HTTP and uploads cost little; the server runs model work one "
        "request at a time, so concurrent clients wait in turn: latency grows with them, throughput stays that "
        "of one process — add --workers on a machine with cores to spare). "
        f"Server start-up (model loading) took {meta['server_startup_s']} s. Load average at the end: "
        + ", ".join(map(str, meta["load_average_at_end"])) + f" on {meta['cpus']} CPUs: a training run shared "
        "the CPU, so these rates are pessimistic.",
        "",
    ])


if __name__ == "__main__":
    main()
