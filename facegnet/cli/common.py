"""Options and helpers shared by the sub-commands."""
from __future__ import annotations

import argparse
import json
import sys

from facegnet.detection.quality import MIN_FACE_SIZE


def add_model_options(parser: argparse.ArgumentParser, threshold: bool = True,
                      min_face_size: int | None = MIN_FACE_SIZE) -> None:
    """--weights, --threshold, --min-face-size, --no-flip, --device, --threads, --backend.

    ``threshold=False`` or ``min_face_size=None`` leave those two out, for commands that define their own.
    """
    group = parser.add_argument_group("model")
    group.add_argument("--weights", default=None,
                       help="model card name, card (.json) or weights (.pt); default: the shipped model")
    if threshold:
        group.add_argument("--threshold", type=float, default=None,
                           help="cosine similarity for 'same person' (default: the model card's calibrated one)")
    if min_face_size is not None:
        group.add_argument("--min-face-size", type=int, default=min_face_size, metavar="PX",
                           help=f"smallest usable face side in pixels (default: {min_face_size})")
    group.add_argument("--no-flip", action="store_true", help="skip flip test-time augmentation (faster)")
    group.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    group.add_argument("--threads", type=int, default=None, metavar="N",
                       help="CPU threads for torch (default: one per core)")
    group.add_argument("--backend", choices=["torch", "onnx", "onnx-int8"], default=None,
                       help="embedding engine: PyTorch, or ONNX Runtime fp32 / int8 (exported and cached on "
                       "first use; default: onnx on a CPU, torch on a GPU)")


def add_database_option(parser: argparse.ArgumentParser) -> None:
    """--database URL: a PostgreSQL gallery instead of a gallery directory (default: $FACEGNET_DATABASE)."""
    parser.add_argument("--database", default=None, metavar="URL",
                        help="a gallery in PostgreSQL (postgresql://user@host/db) instead of a directory, shared by "
                        "servers on several hosts (default: $FACEGNET_DATABASE; needs facegnet[postgres])")


def add_max_side_option(parser: argparse.ArgumentParser, what: str = "before detection") -> None:
    """--max-side PX: photos larger than this are decoded reduced (default: facegnet.io.DEFAULT_MAX_SIDE; 0: never)."""
    from facegnet.io import DEFAULT_MAX_SIDE

    parser.add_argument("--max-side", type=int, default=DEFAULT_MAX_SIDE, metavar="PX",
                        help=f"decode photos larger than this many pixels a side reduced, {what} "
                        f"(default: {DEFAULT_MAX_SIDE}; 0: never)")


def max_side_of(args: argparse.Namespace) -> int | None:
    """The --max-side in force: a number of pixels, or None (0: never reduce); a negative one is refused."""
    from facegnet.errors import FacegnetError

    if args.max_side < 0:
        raise FacegnetError("--max-side must be a number of pixels (0: never reduce)")
    return args.max_side or None


def database_of(args: argparse.Namespace) -> str | None:
    """The PostgreSQL gallery the options name (--database, else $FACEGNET_DATABASE unless --gallery is given), or
    None for a gallery directory. Refuses a URL that is not PostgreSQL's, and one it cannot connect to."""
    import os

    url = getattr(args, "database", None)
    if url is None and getattr(args, "gallery", None) is None:
        url = os.environ.get("FACEGNET_DATABASE", "").strip() or None
    if url is None:
        return None
    if not url.startswith(("postgresql://", "postgres://")):
        from facegnet.errors import GalleryError

        raise GalleryError("--database wants a PostgreSQL URL: postgresql://user@host:port/database")
    if getattr(args, "gallery", None) is not None and getattr(args, "database", None) is not None:
        from facegnet.errors import GalleryError

        raise GalleryError("give --gallery DIR or --database URL, not both")
    from facegnet.gallery.pg_store import connect

    connect(url).close()  # an unreachable database is one line at once, not after the model has loaded
    return url


def make_recognizer(args: argparse.Namespace, **extra):
    """The FaceRecognizer these options describe (``extra``: further FaceRecognizer keyword arguments)."""
    from facegnet.recognizer import FaceRecognizer

    options = {
        "threshold": getattr(args, "threshold", None),
        "min_face_size": getattr(args, "min_face_size", None) or MIN_FACE_SIZE,
        "flip": not args.no_flip,
        "device": args.device,
        "threads": args.threads,
        "backend": getattr(args, "backend", None),
    }
    return FaceRecognizer(args.weights, **{**options, **extra})


def warn(message: str) -> None:
    print(f"facegnet: warning: {message}", file=sys.stderr)


def print_json(obj) -> None:
    print(json.dumps(obj, ensure_ascii=False), flush=True)


def untrained_warning(recognizer) -> None:
    """Say so when the untrained fallback network is in use: its answers mean nothing."""
    if not recognizer.card.trained:
        warn("no trained weights are installed: using an untrained network, so results are near chance")
