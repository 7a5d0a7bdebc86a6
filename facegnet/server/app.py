"""The application factory: ``create_app(gallery_dir, token)`` → a FastAPI app serving the API and the page."""
from __future__ import annotations

import tempfile
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import Depends
from fastapi.staticfiles import StaticFiles
from fastapi_offline import (
    FastAPIOffline,  # Swagger UI's files ship in the package: /docs works offline
)

from facegnet import __version__
from facegnet.io import DEFAULT_MAX_SIDE
from facegnet.server.auth import TokenGuard, is_loopback
from facegnet.server.clusters import ClusterJobs
from facegnet.server.errors import error_response, install_error_handlers
from facegnet.server.live import LiveSessions
from facegnet.server.routes import (
    clusters,
    compreface,
    deepstack,
    live,
    people,
    recognition,
    system,
)
from facegnet.server.service import RECOGNITIONS_AT_ONCE, GalleryService
from facegnet.server.uploads import MB, BodyLimit

#: What the page may load and where it may connect: this server only (no CDN, no third party).
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob: mediastream:; "
    "style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'"
)


def create_app(
    gallery_dir: str | Path,
    token: str | None,
    *,
    recognizer: Any = None,
    weights: str | Path | None = None,
    threshold: float | None = None,
    max_upload_mb: float = 20.0,
    max_request_mb: float = 256.0,
    max_cluster_photos: int = 500,
    cluster_method: str = "average",
    max_side: int | None = DEFAULT_MAX_SIDE,
    concurrency: int = RECOGNITIONS_AT_ONCE,
    live_dir: str | Path | None = None,
    database: str | None = None,
    mqtt: str | None = None,
    workers: int = 1,
) -> FastAPIOffline:
    """The facegnet server for one gallery directory (created if missing).

    Args:
        gallery_dir: the gallery; uploaded photos are kept in ``photos/`` and cluster jobs in ``clusters/``
            inside it (with ``database``, both in the database, the folder holding local copies of photos).
        token: the bearer token every ``/api`` request must carry; None turns the check off (the CLI allows
            that only on a loopback host).
        recognizer: a :class:`~facegnet.recognizer.FaceRecognizer` (default: one from ``weights``).
        threshold: open-set threshold for identify and the camera (default: the model card's).
        max_upload_mb: the largest photo accepted; max_request_mb: the largest request body.
        max_cluster_photos: photos one cluster request may hold.
        cluster_method: see :mod:`facegnet.cluster`.
        max_side: photos larger than this many pixels a side are decoded reduced (None: never).
        concurrency: identify/verify requests run at once (see :mod:`facegnet.server.service`).
        live_dir: where camera sessions (and, with ``mqtt``, who is in view) keep their state when several worker
            processes serve them (None: in this process's memory).
        database: a PostgreSQL gallery (``postgresql://…``) shared with other servers; ``gallery_dir`` then
            only holds this server's working files. Its named tokens are accepted beside ``token``.
        mqtt: also publish the camera sessions' events to this broker (``mqtt://HOST[:PORT]/TOPIC``, see
            :mod:`facegnet.live.mqtt`).
        workers: how many worker processes share ``live_dir`` (each has its own MQTT availability topic).
    """
    if recognizer is None:
        from facegnet.recognizer import FaceRecognizer

        recognizer = FaceRecognizer(weights)
    service = GalleryService(gallery_dir, recognizer, threshold=threshold, max_side=max_side, database=database,
                             concurrency=concurrency)
    if database is not None:
        from facegnet.gallery.pg_tokens import TokenTable

        guard = TokenGuard(token, named=TokenTable(database))
    else:
        guard = TokenGuard(token)

    publisher = None
    if mqtt is not None:
        from facegnet.live.mqtt import MqttPublisher, MqttTarget
        from facegnet.live.presence import SharedPresence

        enrolled = [p["name"] for p in service.people()]
        # Several workers: who is in view, and which of them announces, is theirs to share (facegnet.live.presence).
        presence = None if live_dir is None else SharedPresence(live_dir, enrolled, workers=workers)
        publisher = MqttPublisher(MqttTarget.parse(mqtt), people=enrolled, source="facegnet serve",
                                  presence=presence)

    @asynccontextmanager
    async def lifespan(app):
        if publisher is not None:
            publisher.start(wait=1.0)
        yield
        if publisher is not None:
            publisher.close()
        app.state.clusters.close()
        service.close()

    app = FastAPIOffline(
        title="facegnet",
        version=__version__,
        description="Face verification, identification and galleries over HTTP. Every /api request needs "
        "`Authorization: Bearer <token>`; errors are `{\"error\": \"<one line>\"}`.",
        lifespan=lifespan,
    )
    app.state.service = service
    app.state.guard = guard
    app.state.live = LiveSessions(service, shared_dir=live_dir)
    app.state.live.publish = publisher
    app.state.clusters = ClusterJobs(service, method=cluster_method)
    app.state.max_upload_bytes = int(max_upload_mb * MB)
    app.state.max_cluster_photos = int(max_cluster_photos)
    install_error_handlers(app, private_paths=[Path(gallery_dir), Path(tempfile.gettempdir()), Path.home()])
    for router, dependencies in system.routers(guard):
        app.include_router(router, dependencies=dependencies)
    for module in (people, recognition, live, clusters):
        app.include_router(module.router, dependencies=[Depends(guard)])
    for module in (compreface, deepstack):  # their clients send the token their own way; the routes check it
        app.include_router(module.router)
    app.mount("/static", StaticFiles(packages=[("facegnet.server", "static")]), name="static")

    @app.middleware("http")
    async def security_headers(request, call_next):
        if token is None and not is_loopback(request.url.hostname or ""):
            # Without a token only this machine may call: a page elsewhere could otherwise reach the API by
            # DNS rebinding (a name of its own that resolves to 127.0.0.1).
            return error_response(403, "without a token this server answers only requests for localhost")
        response = await call_next(request)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        if request.url.path == "/" or request.url.path.startswith("/static/"):
            response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        return response

    app.add_middleware(BodyLimit, limit=int(max_request_mb * MB))
    return app
