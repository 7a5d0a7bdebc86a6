"""``facegnet-face-detection FOLDER``: face_recognition's ``face_detection`` command, run by facegnet.

Prints one line per face found in a photo or a folder of photos, in face_recognition's format
``path,top,right,bottom,left`` (pixels; a photo without a face prints nothing). Errors (an unreadable photo:
the others are still checked, and the exit code says something failed) go to stderr, one line each.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from facegnet.compat import face_recognition
from facegnet.compat.commands import (
    Outcome,
    add_common_options,
    outcomes,
    run_command,
)
from facegnet.errors import FacegnetError

__all__ = ["entry_point", "main"]

PROG = "facegnet-face-detection"

_options: dict = {"model": "hog", "upsample": 0}


def _setup(model: str, upsample: int) -> None:
    _options.update(model=model, upsample=upsample)


def check_image(path: str) -> Outcome:
    """The box lines of one photo (or its error)."""
    outcome = Outcome()
    try:
        image = face_recognition.load_image_file(path)
        boxes = face_recognition.face_locations(image, number_of_times_to_upsample=_options["upsample"],
                                                model=_options["model"])
    except FacegnetError as exc:
        return outcome.fail(exc, PROG)
    outcome.lines += [f"{path},{top},{right},{bottom},{left}" for top, right, bottom, left in boxes]
    return outcome


def _upsample(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError("give 0 or more")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Print the box of every face in a photo or a folder of photos as path,top,right,bottom,left; "
                    "face_recognition's command and output, run by facegnet.")
    parser.add_argument("image_to_check", metavar="FOLDER", help="a folder of photos, or one photo")
    parser.add_argument("--upsample", type=_upsample, default=0,
                        help="smallest face found, as dlib measures faces: 0 → 80 px (default), 1 → 40 px, "
                             "2 → 20 px (MTCNN's narrower boxes: 70, 35, 17 px)")
    add_common_options(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; returns the exit code."""
    return run_command(PROG, build_parser(), argv, lambda args, paths: outcomes(
        check_image, paths, args.cpus, _setup, (args.model, args.upsample)))


def entry_point() -> None:
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":
    entry_point()
