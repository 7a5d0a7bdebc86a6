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

    python benchmarks/server_load.py [--seconds 30] [--clients 8] [--workers N] [--threads N] [--big-photo 8000]
    python benchmarks/server_load.py --servers 2 --database postgresql://…   # two servers on one PostgreSQL
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
from host_info import cpu_model, processes_of

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


def start_server(gallery: Path, port: int, workers: int | None, threads: int | None,
                 at_once: int | None = None) -> subprocess.Popen:
    """``facegnet serve`` on loopback; ``None`` leaves a setting to the server's own default."""
    command = [sys.executable, "-m", "facegnet", "serve", "--gallery", str(gallery), "--host", "127.0.0.1",
               "--port", str(port), "--token", TOKEN]
    for flag, value in (("--workers", workers), ("--threads", threads), ("--requests-at-once", at_once)):
        if value is not None:
            command += [flag, str(value)]
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


def server_layout(server: subprocess.Popen) -> str:
    """The server's own line "N worker process(es) × T thread(s)" (it prints it before loading models)."""
    import selectors

    selector = selectors.DefaultSelector()
    selector.register(server.stderr, selectors.EVENT_READ)
    text = b""
    while selector.select(timeout=0.5):
        chunk = os.read(server.stderr.fileno(), 65536)
        if not chunk:
            break
        text += chunk
    line = next((ln for ln in text.decode(errors="replace").splitlines() if "worker process" in ln), "")
    return line.removeprefix("facegnet: ").strip() or "unknown"


def run_all(threads: list[threading.Thread]) -> float:
    """Start every thread, wait for them all; returns the seconds that took."""
    began = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - began


def peak_memory_mb(pid: int) -> float | None:
    """The largest peak resident memory (VmHWM) of the server's processes, in MB."""
    peaks = []
    for process in processes_of(pid):
        try:
            for line in Path(f"/proc/{process}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peaks.append(int(line.split()[1]) / 1024)
        except OSError:
            pass
    return round(max(peaks), 1) if peaks else None


def stop(server: subprocess.Popen) -> None:
    if server.poll() is None:
        os.killpg(server.pid, signal.SIGTERM)  # the server and its workers: the group we started
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)


def big_jpeg(side: int) -> bytes:
    """An LFW face scaled up to ``side``×``side`` pixels, as a JPEG (a phone or camera photo's size)."""
    import io

    from PIL import Image

    photo = sorted(lfw_people(3)[0].glob("*.jpg"))[0]
    out = io.BytesIO()
    Image.open(photo).resize((side, side), Image.BILINEAR).save(out, format="JPEG", quality=85)
    return out.getvalue()


def summary(latencies: list[float], errors: list[str], seconds: float) -> dict:
    ms = np.array(latencies) * 1000.0
    p50 = float(np.percentile(ms, 50)) if len(ms) else None
    p99 = float(np.percentile(ms, 99)) if len(ms) else None
    return {
        "requests": len(latencies),
        "errors": len(errors),
        "first_errors": errors[:5],
        "requests_per_s": round(len(latencies) / seconds, 2),
        "p50_ms": None if p50 is None else round(p50, 1),
        "p99_ms": None if p99 is None else round(p99, 1),
        "max_ms": round(float(ms.max()), 1) if len(ms) else None,
        "p99_over_p50": round(p99 / p50, 2) if p50 else None,
    }


def direct_identify(gallery_dir: Path, probes: list[bytes], seconds: float, threads: int | None) -> dict:
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


def overlaps(span: tuple[float, float], others: list[tuple[float, float]]) -> bool:
    return any(a < span[1] and span[0] < b for a, b in others)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=30.0, help="how long the load lasts")
    parser.add_argument("--clients", type=int, default=8, help="concurrent identifying clients")
    parser.add_argument("--people", type=int, default=20, help="people enrolled before the load")
    parser.add_argument("--workers", type=int, default=None, help="server worker processes (default: the server's)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads per server process (default: the server's)")
    parser.add_argument("--requests-at-once", type=int, default=None,
                        help="identify requests each server worker runs at once (default: the server's)")
    parser.add_argument("--peer-threads", type=int, default=None,
                        help="torch threads of the in-process peer (default: torch's, one per core)")
    parser.add_argument("--big-photo", type=int, default=0, metavar="PX",
                        help="one more client that identifies a PX×PX JPEG every --big-every seconds; the other "
                        "requests' p50 while one is in flight is reported against their p50 otherwise")
    parser.add_argument("--big-every", type=float, default=3.0, metavar="S", help="pause between big photos")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "server_load")
    parser.add_argument("--servers", type=int, default=1,
                        help="with --database: this many servers on one PostgreSQL gallery against one server, "
                        "in the same run (benchmarks/server_load_shared.py; results in server_load_shared.*)")
    parser.add_argument("--database", default=None, metavar="URL",
                        help="a PostgreSQL server (postgresql://…) whose role may create databases")
    args = parser.parse_args()
    if args.servers > 1 or args.database:
        if not args.database:
            raise SystemExit("--servers needs --database postgresql://…")
        from server_load_shared import run

        args.threads = args.threads or 1
        run(args)
        return

    folders = lfw_people(3)
    enrolled, newcomers = folders[: args.people], folders[args.people:]
    probes = [sorted(f.glob("*.jpg"))[2].read_bytes() for f in enrolled]  # photos not enrolled
    big = big_jpeg(args.big_photo) if args.big_photo else None
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="facegnet-load-") as tmp:
        started = time.perf_counter()
        server = start_server(Path(tmp) / "gallery", port, args.workers, args.threads, args.requests_at_once)
        startup = time.perf_counter() - started
        layout = server_layout(server)
        try:
            with httpx.Client(base_url=url, headers=AUTH, timeout=TIMEOUT) as client:
                for folder in enrolled:  # two photos each, before the clock starts
                    files = [("file", (p.name, p.read_bytes(), "image/jpeg")) for p in sorted(folder.glob("*.jpg"))[:2]]
                    response = client.post(f"/api/people/{folder.name}/photos", files=files)
                    response.raise_for_status()
                before = sum(p["templates"] for p in client.get("/api/people").json()["people"])
                for _ in range(4):  # every worker's first request loads its models
                    client.post("/api/identify", files=[("file", ("warm.jpg", probes[0], "image/jpeg"))])
            memory_before = peak_memory_mb(server.pid)

            stop_at = time.perf_counter() + args.seconds
            identify_spans: list[tuple[float, float]] = []
            identify_errors: list[str] = []
            enroll_latency: list[float] = []
            enroll_errors: list[str] = []
            big_spans: list[tuple[float, float]] = []
            big_errors: list[str] = []
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
                        t1 = time.perf_counter()
                        with lock:
                            identify_spans.append((t0, t1))
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

            def big_client() -> None:
                with httpx.Client(base_url=url, headers=AUTH, timeout=TIMEOUT) as c:
                    time.sleep(args.big_every / 2)
                    while time.perf_counter() < stop_at - 1.0:
                        t0 = time.perf_counter()
                        try:
                            r = c.post("/api/identify", files=[("file", ("big.jpg", big, "image/jpeg"))])
                            ok, body = r.status_code == 200, r.json()
                        except (httpx.HTTPError, ValueError) as exc:
                            ok, body = False, {"error": repr(exc)}
                        with lock:
                            big_spans.append((t0, time.perf_counter()))
                            if not ok:
                                big_errors.append(str(body.get("error")))
                        time.sleep(args.big_every)

            threads = [threading.Thread(target=identify_client, args=(n,)) for n in range(args.clients)]
            threads.append(threading.Thread(target=enroll_client))
            if big is not None:
                threads.append(threading.Thread(target=big_client))
            elapsed = run_all(threads)
            with httpx.Client(base_url=url, headers=AUTH, timeout=TIMEOUT) as client:
                after = sum(p["templates"] for p in client.get("/api/people").json()["people"])
            memory_after = peak_memory_mb(server.pid)
        finally:
            stop(server)
        peer = direct_identify(Path(tmp) / "gallery", probes, min(args.seconds, 15.0), args.peer_threads)

    identify = summary([b - a for a, b in identify_spans], identify_errors, elapsed)
    identify["named_correctly"] = named_right[0]
    enroll = summary(enroll_latency, enroll_errors, elapsed)
    enroll["templates_added"] = int(sum(added))
    command = f"python benchmarks/server_load.py --seconds {args.seconds:g} --clients {args.clients} --people {args.people}"
    for flag, value in (("--workers", args.workers), ("--threads", args.threads),
                        ("--requests-at-once", args.requests_at_once), ("--big-photo", args.big_photo or None)):
        if value is not None:
            command += f" {flag} {value}"
    result = {
        "meta": {
            "command": command, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "cpu": cpu_model(platform.processor() or "unknown"),
            "server_layout": layout, "seconds": round(elapsed, 2), "server_startup_s": round(startup, 1),
            "people_enrolled": args.people, "templates_before": before, "templates_after": after,
            "no_template_lost": after == before + enroll["templates_added"],
            "platform": platform.platform(), "cpus": os.cpu_count(),
            "load_average_at_end": [round(v, 2) for v in os.getloadavg()],
            "server_peak_memory_mb": {"before_load": memory_before, "after_load": memory_after},
        },
        "identify": identify,
        "enroll": enroll,
        "python_api_identify": peer,
        "server_vs_python_api": round(identify["requests_per_s"] / peer["requests_per_s"], 3),
    }
    if big is not None:
        during = [b - a for a, b in identify_spans if overlaps((a, b), big_spans)]
        outside = [b - a for a, b in identify_spans if not overlaps((a, b), big_spans)]
        result["big_photo"] = {
            "side_px": args.big_photo, "bytes": len(big),
            "requests": summary([b - a for a, b in big_spans], big_errors, elapsed),
            "identify_during": summary(during, [], elapsed), "identify_otherwise": summary(outside, [], elapsed),
        }
        p50s = result["big_photo"]["identify_during"]["p50_ms"], result["big_photo"]["identify_otherwise"]["p50_ms"]
        result["big_photo"]["p50_during_over_otherwise"] = round(p50s[0] / p50s[1], 2) if all(p50s) else None
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    args.out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))


def markdown(result: dict) -> str:
    """The report; every sentence in it is chosen by the figures above it."""
    meta = result["meta"]
    identify = result["identify"]
    rows = []
    kinds = [("identify", "identify (HTTP)"), ("enroll", "enroll (HTTP)")]
    if "big_photo" in result:
        side = result["big_photo"]["side_px"]
        result = {**result, "big": result["big_photo"]["requests"], "during": result["big_photo"]["identify_during"],
                  "otherwise": result["big_photo"]["identify_otherwise"]}
        kinds += [("big", f"identify a {side}×{side} JPEG (HTTP)"),
                  ("during", "identify (HTTP) while a big photo was in flight"),
                  ("otherwise", "identify (HTTP) with no big photo in flight")]
    kinds.append(("python_api_identify", "peer: Gallery.identify in-process, one at a time"))
    for kind, label in kinds:
        r = result[kind]
        rows.append(f"| {label} | {r['requests']} | {r['requests_per_s']} | {r['p50_ms']} | {r['p99_ms']} "
                    f"| {r['max_ms']} | {r['errors']} |")
    ratio = result["server_vs_python_api"]
    if ratio >= 1.05:
        verdict = f"the server identified {ratio}× as many photos per second as one process calling the Python API"
    elif ratio <= 0.95:
        verdict = (f"the server reached {ratio}× the Python API's rate: HTTP, uploads and sharing cost more "
                   "than its worker processes gained")
    else:
        verdict = f"the server and the Python API ran at about the same rate ({ratio}×)"
    tail = identify["p99_over_p50"]
    within = tail is not None and tail <= 3
    spread = f"Identify's p99 was {tail}× its p50" + (" (within 3×)." if within else
                                                      " (more than 3×: some requests waited much longer).")
    load1, cpus = meta["load_average_at_end"][0], meta["cpus"]
    if load1 > 1.2 * cpus:
        machine = (f"The load average at the end was {load1} on {cpus} CPUs: other work shared the CPU during the "
                   "run, so both rates are lower than on an idle machine and their ratio is noisier.")
    else:
        machine = f"The load average at the end was {load1} on {cpus} CPUs."
    lost = "no template lost" if meta["no_template_lost"] else "**templates lost or duplicated**"
    text = [
        "# `facegnet serve` under load (loopback)",
        "",
        (f"`{meta['command']}` ({meta['date']}, {meta['cpu']}; server: {meta['server_layout']}): "
         f"{meta['seconds']} s of load on a gallery of {meta['people_enrolled']} LFW people; "
         f"{identify['requests']} identify requests from concurrent clients, one LFW photo each, while one client "
         "enrolled new people one photo at a time."),
        "",
        "| requests | count | per second | p50 ms | p99 ms | max ms | errors |",
        "|---|---|---|---|---|---|---|",
        *rows,
        "",
        (f"Server / Python API: **{ratio}×**: {verdict}. {spread} Templates before {meta['templates_before']}, "
         f"enrolments reported {result['enroll']['templates_added']} added, after {meta['templates_after']}: "
         f"{lost}. Identify named the probe's person {identify['named_correctly']} times of {identify['requests']}."),
    ]
    if "big_photo" in result:
        big = result["big_photo"]
        over = big["p50_during_over_otherwise"]
        judged = "." if over is None else " (within 2×)." if over <= 2 else " (more than 2×)."
        text += ["", (f"Big photos: {big['requests']['requests']} of {big['side_px']}×{big['side_px']} pixels "
                      f"({big['bytes'] / 1e6:.1f} MB), p50 {big['requests']['p50_ms']} ms, "
                      f"{big['requests']['errors']} errors. The other identify requests' p50 while one was in "
                      f"flight was {over}× their p50 otherwise{judged}")]
    peaks = meta["server_peak_memory_mb"]
    text += ["", (f"Server start-up (model loading) took {meta['server_startup_s']} s; its largest process's "
                  f"peak memory was {peaks['before_load']} MB before the load and {peaks['after_load']} MB after. "
                  f"{machine}"), ""]
    return "\n".join(text)


if __name__ == "__main__":
    main()
