"""Options and helpers shared by the sub-commands."""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from facegnet.errors import DataError, FacegnetError
from facegnet.quality import MIN_FACE_SIZE


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


def one_line_errors(run: Callable[[], int]) -> int:
    """The body of a ``python -m facegnet.…`` tool: an error the user caused becomes one line on stderr and the
    error's exit code, as in the ``facegnet`` command."""
    try:
        return int(run() or 0)
    except FacegnetError as exc:
        print(f"facegnet: error: {exc}", file=sys.stderr)
        return exc.exit_code


def named_paths(items: list[str], flag: str, value: str = "FOLDER") -> dict[str, Path]:
    """Repeated ``--flag NAME=PATH`` options as ``{NAME: PATH}``; a malformed or missing one is a DataError."""
    named: dict[str, Path] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path or "/" in name:
            raise DataError(f"{flag} wants NAME={value}, not {item!r}")
        named[name] = Path(path)
    if not named:
        raise DataError(f"give at least one {flag} NAME={value}")
    return named
