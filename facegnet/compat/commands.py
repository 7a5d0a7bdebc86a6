"""What face_recognition's two commands share: their folders, options, worker processes and one-line errors."""
from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence

from facegnet.errors import DataError, FacegnetError, ImageError

#: The files face_recognition's commands read from a folder.
SUFFIXES = (".jpg", ".jpeg", ".png")


def image_files_in_folder(folder: str | os.PathLike) -> list[str]:
    """Paths of the .jpg, .jpeg and .png files of a folder (any case), sorted by name, as ``folder/name``."""
    return [os.path.join(folder, name) for name in sorted(os.listdir(folder))
            if name.lower().endswith(SUFFIXES) and os.path.isfile(os.path.join(folder, name))]


def images_to_check(path: str) -> list[str]:
    """An image, or the images of a folder: what both commands take as the thing to check."""
    if os.path.isdir(path):
        return image_files_in_folder(path)
    if not os.path.exists(path):
        raise ImageError("no such file or folder", path)
    return [path]


def known_folder(path: str) -> str:
    if not os.path.isdir(path):
        raise DataError("not a folder of known people's photos" if os.path.exists(path) else "no such folder", path)
    return path


_TRUE = {"1", "true", "t", "yes", "y", "on"}
_FALSE = {"0", "false", "f", "no", "n", "off"}


def boolean(text: str) -> bool:
    """A boolean option value as face_recognition's commands read it (``--show-distance true``)."""
    value = text.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"{text!r} is not a boolean (true/false, yes/no, 1/0)")


def cpus(text: str) -> int:
    """``--cpus``: worker processes, -1 for one per core."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value == 0 or value < -1:
        raise argparse.ArgumentTypeError("give a number of processes (1 or more), or -1 for one per core")
    return value


def add_common_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cpus", type=cpus, default=1,
                        help='number of CPU cores to use in parallel; -1 means "use all in system" (default 1)')
    parser.add_argument("--model", choices=("hog", "cnn"), default="hog",
                        help='face detection model; both run MTCNN, accepted for face_recognition\'s scripts '
                             '(default "hog")')


class Outcome:
    """What checking one image printed: result lines for stdout, lines for stderr, and an exit code."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.notes: list[str] = []
        self.exit_code = 0

    def fail(self, error: FacegnetError, prog: str) -> Outcome:
        self.notes.append(f"{prog}: error: {error}")
        self.exit_code = error.exit_code
        return self


def _init_worker(setup: Callable[..., None], args: tuple) -> None:
    """A worker process: one thread for the networks (the processes are the parallelism), then the command's
    own setup (the known encodings)."""
    from facegnet.compat import face_recognition
    from facegnet.recognizer import FaceRecognizer

    face_recognition.use_recognizer(FaceRecognizer(threads=1))
    setup(*args)


def outcomes(check: Callable[[str], Outcome], paths: Sequence[str], processes: int,
             setup: Callable[..., None], setup_args: tuple = ()) -> Iterator[Outcome]:
    """``check`` of each path, in the paths' order: here when ``processes`` is 1, else in worker processes
    (-1: one per core), each started with ``setup(*setup_args)``."""
    if processes == 1 or len(paths) < 2:
        setup(*setup_args)
        yield from (check(path) for path in paths)
        return
    count = (os.cpu_count() or 1) if processes == -1 else processes
    # spawn: forked copies of a process whose torch/ONNX Runtime threads are running can deadlock.
    context = multiprocessing.get_context("spawn")
    with context.Pool(min(count, len(paths)), initializer=_init_worker, initargs=(setup, setup_args)) as pool:
        yield from pool.imap(check, paths)


def run(prog: str, body: Callable[[], Iterable[Outcome]]) -> int:
    """Print each outcome's lines as it comes; an error the user caused is one line on stderr and the exit code."""
    code = 0
    try:
        for outcome in body():
            for line in outcome.lines:
                print(line, flush=True)
            for note in outcome.notes:
                print(note, file=sys.stderr, flush=True)
            code = code or outcome.exit_code
    except FacegnetError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `facegnet-face-recognition KNOWN UNKNOWN | head`
        return 0
    return code


def run_command(prog: str, parser: argparse.ArgumentParser, argv: Sequence[str] | None,
                work: Callable[[argparse.Namespace, list[str]], Iterable[Outcome]]) -> int:
    """A command's ``main``: parse ``argv``, then :func:`run` ``work(args, paths)`` over the photos named by the
    ``image_to_check`` argument (a missing one is an error line like any other)."""
    args = parser.parse_args(argv)
    return run(prog, lambda: work(args, images_to_check(args.image_to_check)))
