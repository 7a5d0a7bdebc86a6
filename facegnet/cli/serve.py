"""``facegnet serve``: the HTTP API and the web page for one gallery (FastAPI + uvicorn)."""
from __future__ import annotations

import argparse
import os
import sys

from facegnet.cli.common import add_model_options, make_recognizer, untrained_warning
from facegnet.errors import FacegnetError

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
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine)")
    parser.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    parser.add_argument("--token", default=None, help="the token clients must send (default: $FACEGNET_TOKEN, "
                        "else DIR/server.token, generated on first start)")
    parser.add_argument("--no-auth", action="store_true", help="no token (only with a loopback --host)")
    parser.add_argument("--workers", type=int, default=1, metavar="N",
                        help="worker processes sharing the gallery (default: 1)")
    parser.add_argument("--max-upload-mb", type=float, default=20.0, metavar="MB",
                        help="largest photo accepted (default: 20)")
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
    if args.workers < 1:
        raise FacegnetError("--workers must be at least 1")
    if args.gallery is None:
        from facegnet.gallery import DEFAULT_GALLERY

        args.gallery = str(DEFAULT_GALLERY)
    token = resolve_token(args.gallery, args.token, args.no_auth, args.host)
    _check_port(args.host, args.port)  # before the model loads: a busy port is one line, at once
    # Workers are separate processes: each builds its app from these settings (see app_from_environment).
    os.environ.update({
        "FACEGNET_SERVE_GALLERY": os.path.abspath(args.gallery),
        "FACEGNET_SERVE_OPTIONS": _options_json(args),
    })
    if token is not None:
        os.environ["FACEGNET_TOKEN"] = token
    else:
        os.environ.pop("FACEGNET_TOKEN", None)
    host = f"[{args.host}]" if ":" in args.host else args.host
    link = f"http://{host}:{args.port}/" + (f"#token={token}" if token else "")
    print(f"facegnet: serving gallery {args.gallery} on http://{host}:{args.port}/ (API docs: /docs)",
          file=sys.stderr)
    print(f"facegnet: open the page: {link}", file=sys.stderr)  # the token travels in the fragment, never logged
    if not is_loopback(args.host):
        print("facegnet: warning: listening beyond this machine over plain HTTP: put a TLS proxy in front",
              file=sys.stderr)
    if args.workers == 1:
        app = app_from_environment()
        untrained_warning(app.state.service.recognizer)
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    else:
        uvicorn.run("facegnet.cli.serve:app_from_environment", factory=True, host=args.host, port=args.port,
                    workers=args.workers, log_level="warning")
    return 0


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
        "auth": not args.no_auth,
    })


def app_from_environment():
    """The app as ``facegnet serve`` configured it (environment variables), for each worker process."""
    import json

    from facegnet.server import create_app

    options = json.loads(os.environ["FACEGNET_SERVE_OPTIONS"])
    recognizer = make_recognizer(argparse.Namespace(**options))
    token = os.environ.get("FACEGNET_TOKEN") if options["auth"] else None
    if options["auth"] and not token:
        raise FacegnetError("no token for the server (FACEGNET_TOKEN is not set)")
    return create_app(os.environ["FACEGNET_SERVE_GALLERY"], token, recognizer=recognizer,
                      threshold=options["threshold"], max_upload_mb=options["max_upload_mb"])


__all__ = ["register", "run_serve", "app_from_environment"]
