"""``facegnet serve``: an HTTP API and a web page over the Python API (FastAPI + uvicorn).

    >>> from facegnet.server import create_app
    >>> app = create_app("gallery", token="s3cret")      # then: uvicorn.run(app), or TestClient(app)

Modules: :mod:`.app` (the factory), :mod:`.auth` (bearer tokens), :mod:`.errors` (one JSON error shape),
:mod:`.uploads` (size-limited uploads decoded by facegnet's own image reader), :mod:`.service` (the one place
that touches the recogniser and the gallery), :mod:`.live` (camera frames tracked per browser session),
:mod:`.clusters` (groups of unsorted photos to name), :mod:`.scores` (similarities on the 0..1 scales of
CompreFace and DeepStack clients), :mod:`.routes` (the endpoints, facegnet's own and CompreFace- and
DeepStack-compatible ones) and ``static/`` (the page).
"""
from __future__ import annotations


def create_app(*args, **kwargs):
    """See :func:`facegnet.server.app.create_app` (imported lazily: FastAPI loads only when serving)."""
    from facegnet.server.app import create_app as factory

    return factory(*args, **kwargs)


__all__ = ["create_app"]
