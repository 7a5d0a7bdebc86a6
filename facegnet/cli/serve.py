"""``facegnet serve``: the HTTP API and the web page for one gallery (FastAPI + uvicorn)."""
from __future__ import annotations

import argparse
import atexit
import os
import shutil
import sys
import tempfile

from facegnet.cli.common import (
    add_database_option,
    add_max_side_option,
    add_model_options,
    database_of,
    make_recognizer,
    max_side_of,
    untrained_warning,
)
from facegnet.errors import FacegnetError
from facegnet.stopping import sigterm_as_interrupt

#: See :data:`facegnet.server.service.RECOGNITIONS_AT_ONCE` (not imported: FastAPI loads only when serving).
RECOGNITIONS_AT_ONCE = 4

#: Most worker processes the default layout starts (each holds its own copy of the networks).
MAX_DEFAULT_WORKERS = 8

_EXTRA = "the server needs its extra: pip install 'facegnet[server]'"


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="HTTP API and web page for a gallery",
        description="Serve a gallery over HTTP: an API (OpenAPI docs at /docs) and a page to enroll people, "
        "identify photos and a webcam, and name clusters of unsorted photos. Every /api request needs the "
        "token ('Authorization: Bearer TOKEN'): given with --token or FACEGNET_TOKEN, otherwise generated "
        "on first start into DIR/server.token (owner-only).",
    )
    parser.add_argument("--gallery", default=None, metavar="DIR",
                        help="gallery directory (default: the one `facegnet enroll` uses)")
    add_database_option(parser)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine)")
    parser.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    parser.add_argument("--token", default=None, help="the token clients must send (default: $FACEGNET_TOKEN, "
                        "else DIR/server.token, generated on first start)")
    parser.add_argument("--no-auth", action="store_true", help="no token (only with a loopback --host)")
    parser.add_argument("--workers", type=int, default=None, metavar="N",
                        help="worker processes sharing the gallery (default: chosen from the CPU cores with "
                        "--threads: one single-threaded worker per core, at most 8)")
    parser.add_argument("--max-upload-mb", type=float, default=20.0, metavar="MB",
                        help="largest photo accepted (default: 20)")
    parser.add_argument("--requests-at-once", type=int, default=RECOGNITIONS_AT_ONCE, metavar="N",
                        help="identify/verify requests each worker runs at once, sharing its cores (default: "
                        f"{RECOGNITIONS_AT_ONCE}; 1: one at a time)")
    add_max_side_option(parser, "before detection and enrolment")
    parser.add_argument("--mqtt", default=None, metavar="URL",
                        help="publish the page's camera events to an MQTT broker: mqtt://HOST[:PORT]/TOPIC "
                        "(see `facegnet identify --mqtt` and docs/home-automation.md)")
    parser.add_argument("--threshold", type=float, default=None,
                        help="similarity below which a face is 'unknown' (default: the model card's identification "
                        "threshold)")
    add_model_options(parser, threshold=False, min_face_size=None)
    parser.set_defaults(func=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    # Before torch loads: OpenMP threads that wait for work sleep instead of spinning. A server shares the CPU
    # (requests, workers, other programs), and spinning threads then cost 10-100x (measured: 0.25 s vs 30 s
    # per photo with two threads on a busy two-core machine).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        import uvicorn

        from facegnet.server.auth import is_loopback, resolve_token
    except ImportError:
        raise FacegnetError(_EXTRA) from None
    if not 1 <= args.port <= 65535:
        raise FacegnetError(f"--port must be between 1 and 65535, not {args.port}")
    if args.workers is not None and args.workers < 1:
        raise FacegnetError("--workers must be at least 1")
    if args.threads is not None and args.threads < 1:
        raise FacegnetError("--threads must be at least 1")
    if args.requests_at_once < 1:
        raise FacegnetError("--requests-at-once must be at least 1")
    max_side_of(args)  # a negative one is refused before anything starts
    args.workers, args.threads = worker_layout(available_cores(), args.workers, args.threads)
    database = database_of(args)
    if database is not None:
        # The gallery (cluster jobs included) lives in PostgreSQL; this server's working files (local copies of
        # photos) in a private temporary folder. Tokens: --token / FACEGNET_TOKEN and the database's named tokens.
        if args.no_auth:
            raise FacegnetError("--no-auth is not for a shared gallery: give --token, or add named tokens with "
                                "`facegnet gallery token add NAME --database URL`")
        args.gallery = tempfile.mkdtemp(prefix="facegnet-serve-")  # 0700
        atexit.register(shutil.rmtree, args.gallery, ignore_errors=True)  # copies of faces do not outlive it
        token = args.token or os.environ.get("FACEGNET_TOKEN") or None
        if token is not None and len(token) < 8:
            raise FacegnetError("the token must be at least 8 characters long")
    elif args.gallery is None:
        from facegnet.gallery import DEFAULT_GALLERY

        args.gallery = str(DEFAULT_GALLERY)
    if database is None:
        token = resolve_token(args.gallery, args.token, args.no_auth, args.host)
    _check_port(args.host, args.port)  # before the model loads: a busy port is one line, at once
    if args.mqtt:  # a bad URL or a missing client library: one line before any model loads
        from facegnet.live.mqtt import MqttTarget, require_client

        MqttTarget.parse(args.mqtt)
        require_client()
    # Workers are separate processes: each builds its app from these settings (see app_from_environment).
    os.environ.update({
        "FACEGNET_SERVE_DATABASE": database or "",
        "FACEGNET_SERVE_GALLERY": os.path.abspath(args.gallery),
        "FACEGNET_SERVE_OPTIONS": _options_json(args),
    })
    if token is not None:
        os.environ["FACEGNET_TOKEN"] = token
    else:
        os.environ.pop("FACEGNET_TOKEN", None)
    host = f"[{args.host}]" if ":" in args.host else args.host
    link = f"http://{host}:{args.port}/" + (f"#token={token}" if token else "")
    from facegnet.gallery.pg_store import redact

    shown = redact(database) if database else args.gallery
    print(f"facegnet: serving gallery {shown} on http://{host}:{args.port}/ (API docs: /docs)",
          file=sys.stderr)
    print(f"facegnet: open the page: {link}", file=sys.stderr)  # the token travels in the fragment, never logged
    if database is not None and token is None:
        print("facegnet: only the database's named tokens are accepted (facegnet gallery token add NAME --role enroll "
              "--database URL)", file=sys.stderr)
    if not is_loopback(args.host):
        print("facegnet: warning: listening beyond this machine over plain HTTP: put a TLS proxy in front",
              file=sys.stderr)
    print(f"facegnet: {args.workers} worker process(es) × {args.threads} thread(s)", file=sys.stderr)
    # uvicorn stops gracefully on SIGTERM, then raises it again, which would end this process before its cleanup
    # (the temporary folders): so it becomes KeyboardInterrupt, and a stop by a service manager or Ctrl-C is exit 0.
    restore = sigterm_as_interrupt()
    try:
        return _run_uvicorn(args, uvicorn)
    except KeyboardInterrupt:
        return 0
    finally:
        restore()


def _run_uvicorn(args: argparse.Namespace, uvicorn) -> int:
    """Serve until stopped: in this process for one worker, else under uvicorn's supervisor."""
    if args.workers == 1:
        os.environ.pop("FACEGNET_SERVE_LIVE_DIR", None)  # sessions in this one process's memory
        app = app_from_environment()
        untrained_warning(app.state.service.recognizer)
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
        return 0
    # A camera session's frames reach any worker: its state lives in a private folder they all share.
    live_dir = tempfile.mkdtemp(prefix="facegnet-live-")  # 0700
    os.environ["FACEGNET_SERVE_LIVE_DIR"] = live_dir
    status = None
    if args.mqtt:  # each worker says whether it is up on its own topic; TOPIC/status is this process's
        from facegnet.live.mqtt import MqttTarget
        from facegnet.live.server_status import ServerStatus

        status = ServerStatus(MqttTarget.parse(args.mqtt))
        status.start()
    try:
        uvicorn.run("facegnet.cli.serve:app_from_environment", factory=True, host=args.host, port=args.port,
                    workers=args.workers, log_level="warning", **_patient_supervisor(uvicorn))
    finally:
        if status is not None:
            status.close()
        shutil.rmtree(live_dir, ignore_errors=True)
    return 0


def _patient_supervisor(uvicorn) -> dict:
    """uvicorn kills a worker that does not answer its health check within 5 s, mid-request; on a CPU shared
    with other work a worker busy with photos can miss that, so allow a minute (uvicorn >= 0.30 has the knob)."""
    import inspect

    if "timeout_worker_healthcheck" in inspect.signature(uvicorn.Config).parameters:
        return {"timeout_worker_healthcheck": 60}
    return {}


def available_cores() -> int:
    """CPU cores this process may run on (its affinity, which containers and taskset narrow)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def worker_layout(cores: int, workers: int | None = None, threads: int | None = None) -> tuple[int, int]:
    """(worker processes, torch threads each) for ``cores``, filling in what was not given.

    One photo's networks gain little from a second thread, while separate processes each run a request of
    their own: so one single-threaded worker per core (at most :data:`MAX_DEFAULT_WORKERS`, the rest of the
    cores going to threads). Measured in benchmarks/server_load.py on two cores.
    """
    if workers is None and threads is None:
        workers = min(cores, MAX_DEFAULT_WORKERS)
    if workers is None:
        workers = max(1, min(cores // threads, MAX_DEFAULT_WORKERS))
    if threads is None:
        threads = max(1, cores // workers)
    return workers, threads


def _check_port(host: str, port: int) -> None:
    """FacegnetError when nothing can listen on host:port (in use, no such address, not permitted)."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise FacegnetError(f"cannot listen on {host}:{port}: unknown host ({exc.strerror})") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind(address)
        except OSError as exc:
            raise FacegnetError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def _options_json(args: argparse.Namespace) -> str:
    import json

    return json.dumps({
        "weights": args.weights, "threshold": args.threshold, "no_flip": args.no_flip, "device": args.device,
        "threads": args.threads, "backend": args.backend, "max_upload_mb": args.max_upload_mb,
        "auth": not args.no_auth, "max_side": max_side_of(args),
        "requests_at_once": args.requests_at_once, "mqtt": args.mqtt, "workers": args.workers,
    })


def app_from_environment():
    """The app as ``facegnet serve`` configured it (environment variables), for each worker process."""
    import json

    from facegnet.server import create_app

    options = json.loads(os.environ["FACEGNET_SERVE_OPTIONS"])
    recognizer = make_recognizer(argparse.Namespace(**options))
    token = os.environ.get("FACEGNET_TOKEN") if options["auth"] else None
    database = os.environ.get("FACEGNET_SERVE_DATABASE") or None
    if options["auth"] and not token and database is None:  # a database's named tokens may be the only ones
        raise FacegnetError("no token for the server (FACEGNET_TOKEN is not set)")
    return create_app(os.environ["FACEGNET_SERVE_GALLERY"], token, recognizer=recognizer, database=database,
                      threshold=options["threshold"], max_upload_mb=options["max_upload_mb"],
                      max_side=options.get("max_side"), concurrency=options.get("requests_at_once", 1),
                      live_dir=os.environ.get("FACEGNET_SERVE_LIVE_DIR"),
                      mqtt=options.get("mqtt"), workers=options.get("workers", 1))


__all__ = ["register", "run_serve", "app_from_environment", "worker_layout", "available_cores"]
