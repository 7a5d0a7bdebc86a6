"""``facegnet-face-recognition KNOWN_DIR UNKNOWN``: face_recognition's ``face_recognition`` command, run by facegnet.

Each photo in KNOWN_DIR is one known person, named by its file name (``barack_obama.jpg`` → ``barack_obama``).
UNKNOWN is a photo or a folder of them. One line is printed per face found, in face_recognition's format::

    unknown/1.jpg,barack_obama          # every known person within --tolerance, in KNOWN_DIR's order
    unknown/2.jpg,unknown_person        # a face that matches nobody
    unknown/3.jpg,no_persons_found      # a photo without a face
    unknown/1.jpg,barack_obama,0.4127   # with --show-distance true (None for the other two)

Warnings (a known photo with no face, or several) and errors (an unreadable photo: the others are still
checked, and the exit code says something failed) go to stderr, one line each.
"""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator, Sequence

import numpy as np

from facegnet.compat import face_recognition
from facegnet.compat.commands import (
    Outcome,
    add_common_options,
    boolean,
    image_files_in_folder,
    known_folder,
    outcomes,
    run_command,
)
from facegnet.errors import FacegnetError

__all__ = ["entry_point", "image_files_in_folder", "main", "scan_known_people"]

PROG = "facegnet-face-recognition"

#: The known people of this process: names and encodings (set in the main process or in each worker).
_known: dict = {"names": [], "encodings": [], "tolerance": 0.6, "show_distance": False, "model": "hog"}


def scan_known_people(known_people_folder: str, model: str = "hog") -> tuple[list[str], list[np.ndarray], Outcome]:
    """The names and encodings of the known photos (the first face of each; largest first), and the warnings."""
    names, encodings, outcome = [], [], Outcome()
    for path in image_files_in_folder(known_folder(known_people_folder)):
        try:
            image = face_recognition.load_image_file(path)
            found = face_recognition.face_encodings(image, face_recognition.face_locations(image, model=model))
        except FacegnetError as exc:
            outcome.fail(exc, PROG)
            continue
        if len(found) > 1:
            outcome.notes.append(f"WARNING: More than one face found in {path}. Only considering the first face.")
        if not found:
            outcome.notes.append(f"WARNING: No faces found in {path}. Ignoring file.")
        else:
            names.append(os.path.splitext(os.path.basename(path))[0])
            encodings.append(found[0])
    return names, encodings, outcome


def _setup(names: list[str], encodings: list[np.ndarray], tolerance: float, show_distance: bool, model: str) -> None:
    _known.update(names=names, encodings=encodings, tolerance=tolerance, show_distance=show_distance, model=model)


def _line(path: str, name: str, distance: float | None) -> str:
    return f"{path},{name},{distance}" if _known["show_distance"] else f"{path},{name}"


def check_image(path: str) -> Outcome:
    """The result lines of one unknown photo (or its error)."""
    outcome = Outcome()
    try:
        image = face_recognition.load_image_file(path)
        found = face_recognition.face_encodings(image, face_recognition.face_locations(image, model=_known["model"]))
    except FacegnetError as exc:
        return outcome.fail(exc, PROG)
    names = _known["names"]
    for encoding in found:
        distances = face_recognition.face_distance(_known["encodings"], encoding)
        matches = [(name, distance) for name, distance in zip(names, distances) if distance <= _known["tolerance"]]
        outcome.lines += [_line(path, name, distance) for name, distance in matches] or [
            _line(path, "unknown_person", None)]
    if not found:
        outcome.lines.append(_line(path, "no_persons_found", None))
    return outcome


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Recognise the known people (one photo each in KNOWN_DIR, named by file) in a photo or a "
                    "folder of photos; face_recognition's command and output, run by facegnet.")
    parser.add_argument("known_people_folder", metavar="KNOWN_DIR")
    parser.add_argument("image_to_check", metavar="UNKNOWN", help="a photo or a folder of photos")
    parser.add_argument("--tolerance", type=float, default=face_recognition.DEFAULT_TOLERANCE,
                        help="largest face distance that is a match (default 0.6, the model card's calibrated "
                             "threshold); lower it if one face matches several people")
    parser.add_argument("--show-distance", type=boolean, default=False, metavar="BOOL",
                        help="print each match's face distance too (true/false, default false)")
    add_common_options(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; returns the exit code."""
    return run_command(PROG, build_parser(), argv, _work)


def _work(args: argparse.Namespace, paths: list[str]) -> Iterator[Outcome]:
    """The known people's warnings, then each photo's outcome."""
    names, encodings, warnings = scan_known_people(args.known_people_folder, args.model)
    yield warnings
    setup_args = (names, encodings, args.tolerance, args.show_distance, args.model)
    yield from outcomes(check_image, paths, args.cpus, _setup, setup_args)


def entry_point() -> None:
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":
    entry_point()
