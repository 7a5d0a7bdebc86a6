#!/usr/bin/env python3
"""face_recognition's own examples, run through facegnet.compat.face_recognition with only the import lines changed.

Seven of the examples in face_recognition's ``examples/`` (ageitgey/face_recognition at commit
2e2dccea9dd0ce730c8d464d0f67c6eebb40c9d1), each on its own photos or clip, are copied to a temporary folder (DIR is
never written to) where ``import face_recognition`` becomes ``import facegnet.compat.face_recognition as
face_recognition`` (and the knn example's import from ``face_recognition.face_recognition_cli`` likewise). Each
script then runs unchanged, in its own process, under this file's ``--run-one`` harness, which only makes
``Image.show`` and OpenCV's windows do nothing, restores Pillow's ``ImageDraw.textsize`` (gone in Pillow 10) and
logs the labels drawn with the number of video frames read so far. Where ``hamilton_clip.mp4`` is absent,
``short_hamilton_clip.mp4`` is used under that name. Each example is summarised in one line (the answers it printed
or the labels it drew) with its wall time in benchmarks/results/face_recognition_examples.{json,md}.

    git clone https://github.com/ageitgey/face_recognition
    git -C face_recognition checkout 2e2dccea9dd0ce730c8d464d0f67c6eebb40c9d1
    python benchmarks/face_recognition_examples.py --examples face_recognition/examples [--weights CARD.json]
        [--threads 1]
"""
from __future__ import annotations

import argparse
import json
import re
import runpy
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path

from host_info import run_line, run_record, write_result

HERE = Path(__file__).resolve().parent
UPSTREAM_COMMIT = "2e2dccea9dd0ce730c8d464d0f67c6eebb40c9d1"
#: The only edits made to each script: (pattern, replacement, how many lines must match; None: any number).
IMPORT_EDITS = [
    (r"^import face_recognition$", "import facegnet.compat.face_recognition as face_recognition", 1),
    (r"^from face_recognition\.face_recognition_cli import ", "from facegnet.compat.face_recognition_cli import ",
     None),
]

# -- the harness (--run-one): one example in this process --------------------------------------------------
labels: list[dict] = []
frames_read = 0


def _patch_pillow() -> None:
    """No windows; ``textsize`` back; every label drawn logged."""
    from PIL import Image, ImageDraw

    original_text = ImageDraw.ImageDraw.text

    def textsize(self, text, font=None, *args, **kwargs):
        box = self.textbbox((0, 0), text, font=font)  # Pillow < 10 gave the extent from the origin
        return box[2], box[3]

    def text(self, xy, text, *args, **kwargs):
        shown = text.decode("utf-8") if isinstance(text, bytes) else str(text)
        labels.append({"via": "ImageDraw.text", "text": shown, "xy": [float(v) for v in xy][:2]})
        return original_text(self, xy, text, *args, **kwargs)

    Image.Image.show = lambda self, *args, **kwargs: None
    ImageDraw.ImageDraw.textsize, ImageDraw.ImageDraw.text = textsize, text


def _patch_cv2() -> None:
    """No windows; labels logged with the frame they were drawn on (frames counted as they are read)."""
    import cv2

    original_put_text, capture_type = cv2.putText, cv2.VideoCapture

    def put_text(img, text, org, *args, **kwargs):
        labels.append({"via": "cv2.putText", "text": str(text), "xy": [int(v) for v in org], "frame": frames_read})
        return original_put_text(img, text, org, *args, **kwargs)

    class CountingCapture:
        def __init__(self, *args, **kwargs):
            self._capture = capture_type(*args, **kwargs)

        def read(self, *args, **kwargs):
            global frames_read
            ok, frame = self._capture.read(*args, **kwargs)
            frames_read += bool(ok)
            return ok, frame

        def __getattr__(self, name):
            return getattr(self._capture, name)

    cv2.imshow = cv2.destroyAllWindows = lambda *args, **kwargs: None
    cv2.waitKey = lambda *args, **kwargs: -1
    cv2.putText, cv2.VideoCapture = put_text, CountingCapture


def run_one(script: str, log: Path, weights: str | None, threads: int) -> int:
    """Run ``script`` as __main__ in the current folder with the patches above; its outcome and labels to ``log``."""
    from facegnet.compat import face_recognition
    from facegnet.recognizer import FaceRecognizer

    _patch_pillow()
    _patch_cv2()
    face_recognition.use_recognizer(FaceRecognizer(weights=weights, threads=threads))
    outcome: dict = {"script": script, "status": "ok", "error": None}
    started, sys.argv = time.monotonic(), [script]
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as exc:  # quit() / sys.exit() inside the script
        outcome["status"] = f"exit {exc.code}"
    except BaseException as exc:  # noqa: BLE001 - reported, as the example would have shown it
        outcome.update(status="error", error=f"{type(exc).__name__}: {exc}")
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        outcome.update(script_seconds=round(time.monotonic() - started, 2), labels=labels, frames_read=frames_read)
        log.write_text(json.dumps(outcome))
    return 0 if outcome["status"] == "ok" else 1


# -- one line per example ------------------------------------------------------------------------------------
def _ranges(frames: list[int]) -> str:
    """Frame numbers as compact ranges: 85–96, 120, 130–131."""
    runs: list[list[int]] = []
    for f in sorted(set(frames)):
        if runs and f == runs[-1][1] + 1:
            runs[-1][1] = f
        else:
            runs.append([f, f])
    return ", ".join(f"{a}–{b}" if a != b else f"{a}" for a, b in runs)


def _drawn(run: dict, via: str) -> list[dict]:
    return [label for label in run["log"].get("labels", []) if label["via"] == via]


def recognize_faces_in_pictures(run: dict) -> str:
    if "wasn't able to locate any faces" in run["stdout"]:
        return "obama2.jpg: no face found in at least one photo (the script aborts)"
    a = dict(re.findall(r"Is the unknown face (.*)\? (\S+)", run["stdout"]))
    return (f"obama2.jpg: Biden {a.get('a picture of Biden')}, Obama {a.get('a picture of Obama')}, "
            f"a new person {a.get('a new person that we' + chr(39) + 've never seen before')}")


def face_distance(run: dict) -> str:
    verdicts = {("True", "True"): "a match at 0.6 and at 0.5", ("True", "False"): "a match at 0.6, not at 0.5",
                ("False", "True"): "a match at 0.5, not at 0.6", ("False", "False"): "none"}
    blocks = re.findall(r"distance of (\S+) from known image #(\d+)\n.*0\.6.*\? (\S+)\n.*0\.5.*\? (\S+)", run["stdout"])
    return "obama2.jpg is " + ", ".join(f"{d} from {['obama.jpg', 'biden.jpg'][int(i)]} ({verdicts[(a6, a5)]})"
                                        for d, i, a6, a5 in blocks)


def find_faces_in_picture(run: dict) -> str:
    count = re.search(r"I found (\d+) face", run["stdout"])
    n = int(count.group(1)) if count else 0
    boxes = re.findall(r"Top: (\d+), Left: (\d+), Bottom: (\d+), Right: (\d+)", run["stdout"])
    listed = "; ".join(f"top {t}, left {left}, bottom {b}, right {r}" for t, left, b, r in boxes)
    return f"biden.jpg: {n} face{'s' if n != 1 else ''}" + (f", {listed}" if listed else "")


def identify_and_draw_boxes_on_faces(run: dict) -> str:
    drawn = sorted(_drawn(run, "ImageDraw.text"), key=lambda label: label["xy"][0])
    if len(drawn) == 2:
        return f"two_people.jpg: {drawn[0]['text']} (left), {drawn[1]['text']} (right)"
    return "two_people.jpg, left to right: " + (", ".join(f"{d['text']} (x {d['xy'][0]:.0f})" for d in drawn)
                                                  or "no label drawn")


def face_recognition_knn(run: dict) -> str:
    parts: list[tuple[str, list[str]]] = []
    for line in run["stdout"].splitlines():
        if looking := re.match(r"Looking for faces in (.*)", line):
            parts.append((Path(looking.group(1)).stem, []))
        elif (found := re.match(r"- Found (.*) at \((-?\d+), (-?\d+)\)", line)) and parts:
            parts[-1][1].append(found.group(1))
    text = "; ".join(f"{stem}: {', '.join(names) if names else 'no face'}" for stem, names in parts)
    drawn, printed = len(_drawn(run, "ImageDraw.text")), sum(len(names) for _, names in parts)
    return text + (f" [labels drawn: {drawn}, faces printed: {printed}]" if drawn != printed else "")


def facerec_from_video_file(run: dict) -> str:
    total = len(re.findall(r"^Writing frame", run["stdout"], flags=re.MULTILINE)) or run["log"].get("frames_read", 0)
    by_name: dict[str, list[int]] = {}
    for label in _drawn(run, "cv2.putText"):
        by_name.setdefault(label["text"], []).append(label["frame"])
    people = ("Lin-Manuel Miranda", "Alex Lacamoire")
    parts = []
    for name in people:
        frames = sorted(set(by_name.get(name, [])))
        parts.append(f"{name} labelled on {len(frames)} of {total} frames"
                     + (f" (frames {_ranges(frames)})" if frames else ""))
    if others := sorted(set(by_name) - set(people)):
        parts.append("other labels: " + ", ".join(others))
    return "hamilton_clip.mp4 (= short_hamilton_clip.mp4), tolerance 0.50: " + "; ".join(parts)


def find_faces_in_batches(run: dict) -> str:
    counts = {int(f): int(n) for n, f in re.findall(r"I found (\d+) face\(s\) in frame #(\d+)\.", run["stdout"])}
    if not counts:
        return "no frame reported"
    per_frame, most = Counter(counts.values()), max(counts.values())
    multi = [f for f, n in counts.items() if n >= 2]
    return (f"short_hamilton_clip.mp4, first {len(counts)} frames (upsample 0): a face in "
            f"{sum(1 for n in counts.values() if n)} of {len(counts)} frames; {sum(counts.values())} faces; "
            "faces per frame " + ", ".join(f"{k}: {per_frame[k]} frames" for k in sorted(per_frame))
            + f"; 2 or more in frames #{_ranges(multi) or 'none'}; most {most} "
            f"(frames #{_ranges([f for f, n in counts.items() if n == most])})")


#: The examples, in the migration guide's table order (the two video examples, the slow ones, last).
SUMMARIES = {f.__name__ + ".py": f for f in (
    recognize_faces_in_pictures, face_distance, find_faces_in_picture, identify_and_draw_boxes_on_faces,
    face_recognition_knn, facerec_from_video_file, find_faces_in_batches)}


def summarise(run: dict) -> str:
    """The example's line, and how it failed where it did."""
    try:
        text = SUMMARIES[run["name"]](run)
    except Exception as exc:  # noqa: BLE001 - a summary that cannot be read is itself a finding
        text = f"(summary failed: {type(exc).__name__}: {exc})"
    if run["log"].get("status") != "ok" or run["rc"] != 0:
        error = run["log"].get("error") or (run["stderr"].strip().splitlines() or ["?"])[-1]
        text += f" [script {run['log'].get('status')}, rc {run['rc']}: {error}]"
    return text


# -- the benchmark: every example in its own process --------------------------------------------------------
def prepare(examples: Path, work: Path) -> None:
    """A copy of ``examples`` in ``work`` with the import lines changed."""
    shutil.copytree(examples, work)
    if not (work / "hamilton_clip.mp4").exists():
        shutil.copyfile(work / "short_hamilton_clip.mp4", work / "hamilton_clip.mp4")
    for name in SUMMARIES:
        text = (work / name).read_text()
        for pattern, replacement, expected in IMPORT_EDITS:
            text, count = re.subn(pattern, replacement, text, flags=re.MULTILINE)
            if expected is not None and count != expected:
                raise ValueError(f"{examples / name}: {count} lines match {pattern!r}, expected {expected}")
        (work / name).write_text(text)


def run_example(name: str, work: Path, card: Path | str, threads: int) -> dict:
    """Run one example under the harness in its own process: its stdout, the harness's log, the wall time."""
    log = work / f"{Path(name).stem}.harness.json"
    command = [sys.executable, str(Path(__file__).resolve()), "--run-one", name, "--log", str(log),
               "--weights", str(card), "--threads", str(threads)]
    started = time.monotonic()
    done = subprocess.run(command, cwd=work, capture_output=True, text=True, check=False)
    wall = time.monotonic() - started
    harness = json.loads(log.read_text()) if log.exists() else {"status": "no log", "labels": []}
    return {"name": name, "rc": done.returncode, "stdout": done.stdout, "stderr": done.stderr, "log": harness,
            "wall": wall}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=Path, help="face_recognition's examples/ folder")
    parser.add_argument("--weights", help="model card (.json) or its name (default: the shipped card)")
    parser.add_argument("--threads", type=int, default=1, help="torch / ONNX Runtime threads per example")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "face_recognition_examples")
    parser.add_argument("--run-one", metavar="SCRIPT", help=argparse.SUPPRESS)  # the harness, in each subprocess
    parser.add_argument("--log", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.run_one:
        return run_one(args.run_one, args.log, args.weights, args.threads)
    if args.examples is None or not all((args.examples / name).is_file() for name in SUMMARIES):
        parser.exit(2, f"{parser.prog}: error: --examples {args.examples}: not face_recognition's examples/ folder "
                       f"(needs {', '.join(SUMMARIES)})\n")

    from facegnet.card import resolve_card

    try:
        card = resolve_card(args.weights)
    except Exception as exc:  # noqa: BLE001 - facegnet's errors name the file and the reason
        parser.exit(2, f"{parser.prog}: error: --weights {args.weights}: {exc}\n")
    given = sys.argv[1:] if argv is None else argv
    command = shlex.join(["python", "benchmarks/face_recognition_examples.py", *given])
    weights = card.path or args.weights or "untrained"  # the card read here, for every example
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "examples"
        try:
            prepare(args.examples, work)
        except (OSError, ValueError) as exc:
            parser.exit(2, f"{parser.prog}: error: {exc}\n")
        for name in SUMMARIES:
            run = run_example(name, work, weights, args.threads)
            rows.append({"example": name, "summary": summarise(run), "status": run["log"].get("status"),
                         "rc": run["rc"], "wall_seconds": round(run["wall"], 1),
                         "script_seconds": run["log"].get("script_seconds")})
            print(f"{name} | {rows[-1]['summary']} | wall {run['wall']:.1f} s", flush=True)
    result = {**run_record(command), "upstream_commit": UPSTREAM_COMMIT, "model": card.name,
              "fingerprint": card.fingerprint[:12], "threads": args.threads, "examples": rows}
    ran = sum(r["status"] == "ok" for r in rows)
    lines = [f"# face_recognition@{UPSTREAM_COMMIT[:12]}'s examples through facegnet.compat.face_recognition", "",
             run_line(result), "",
             (f"Weights {card.name} (sha256 {result['fingerprint']}…), {args.threads} thread(s) per example; "
              f"{ran} of {len(rows)} examples ran to the end."), "",
             "| example | summary | wall s (script s) |", "|---|---|---|"]
    lines += [f"| `{r['example']}` | {r['summary']} | {r['wall_seconds']} ({r['script_seconds']}) |" for r in rows]
    write_result(args.out, result, lines + [""])
    return 0


if __name__ == "__main__":
    sys.exit(main())
