#!/usr/bin/env python3
"""A new user's gallery: enroll N LFW people from two photos each, identify their third.

The first N people (alphabetically) with at least three LFW photos; photos 1 and 2 enrolled, photo 3 identified
(its largest face). facegnet: a fresh Gallery at the card's identification threshold (``facegnet identify``'s
default), for each weights file given; face_recognition (with ``--peer-python``): the nearest enrolled encoding
within its default tolerance 0.6, as its CLI decides. Counts named right, "unknown" and named wrong. LFW is an
evaluation set here, never used to choose anything. Writes benchmarks/results/gallery_40.{json,md}; rows of
earlier runs for models or tools not measured this time are kept there under "earlier runs" (same photos, and
every tool is deterministic), so the record of past releases survives a re-run.

    python benchmarks/gallery_40.py [--people 40] [--weights CARD ...] [--peer-python /path/to/python]
"""
from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
LFW = HERE.parent.parent / "shared" / "data" / "lfw" / "images"

PEER = r"""
import json, sys
import face_recognition as fr
people = json.loads(sys.argv[1])
def largest(path):
    image = fr.load_image_file(path)
    boxes = fr.face_locations(image)
    if not boxes:
        return None
    box = max(boxes, key=lambda b: (b[2] - b[0]) * (b[1] - b[3]))
    return fr.face_encodings(image, [box])[0]
names, known = [], []
for name, photos in people.items():
    for p in photos[:2]:
        e = largest(p)
        if e is not None:
            names.append(name); known.append(e)
out = {}
for name, photos in people.items():
    e = largest(photos[2])
    if e is None:
        out[name] = "no face"; continue
    d = fr.face_distance(known, e)
    i = int(d.argmin())
    out[name] = names[i] if d[i] <= 0.6 else "unknown"
print(json.dumps(out))
"""


def choose_people(n: int) -> dict[str, list[str]]:
    """The first ``n`` people with three or more photos, and those photos' paths (1, 2, 3)."""
    people = {}
    for folder in sorted(p for p in LFW.iterdir() if p.is_dir()):
        photos = sorted(folder.glob("*.jpg"))
        if len(photos) >= 3:
            people[folder.name] = [str(p) for p in photos[:3]]
        if len(people) == n:
            break
    return people


def tally(people: dict[str, list[str]], answers: dict[str, str]) -> dict:
    named = sum(answers[p] == p for p in people)
    unknown = sum(answers[p] in ("unknown", "no face") for p in people)
    return {"named": named, "unknown": unknown, "wrong": len(people) - named - unknown, "answers": answers}


def run_facegnet(people: dict[str, list[str]], weights: str | None) -> dict:
    from facegnet.gallery import Gallery
    from facegnet.recognizer import FaceRecognizer

    recognizer = FaceRecognizer(weights=weights) if weights else FaceRecognizer()
    with tempfile.TemporaryDirectory() as tmp, Gallery(Path(tmp) / "g", recognizer=recognizer, create=True) as g:
        for name, photos in people.items():
            for photo in photos[:2]:
                g.enroll(name, photo)
        answers = {}
        for name, photos in people.items():
            faces = g.identify(photos[2])
            answers[name] = faces[0].name if faces else "no face"
        threshold = g.threshold
    return {"model": recognizer.card.name, "sha256": (recognizer.card.sha256 or "")[:12], "threshold": threshold,
            **tally(people, answers)}


def row_key(row: dict) -> tuple[str, str]:
    """What a row measured: the tool and, for facegnet, which weights."""
    return row["tool"], row.get("sha256", "")


def earlier_rows(path: Path, rows: list[dict], people: int) -> list[dict]:
    """The previous result file's rows (and its earlier ones) for tools/weights this run did not measure, newest
    first, without their per-person answers; nothing when the file is missing or was for another ``--people``."""
    try:
        previous = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    if previous.get("people") != people:
        return []
    measured = {row_key(r) for r in rows}
    kept: dict[tuple[str, str], dict] = {}
    for r in previous.get("rows", []) + previous.get("earlier", []):
        if row_key(r) not in measured and row_key(r) not in kept:
            kept[row_key(r)] = {k: v for k, v in r.items() if k != "answers"}
    return list(kept.values())


def table(rows: list[dict], people: int) -> list[str]:
    """Markdown table lines for result rows."""
    lines = ["| tool | model | threshold | named | unknown | wrong | run |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        model = f"{r.get('model', '')} {r.get('sha256', '')}".strip() or "dlib (face_recognition 1.3)"
        threshold = r.get("threshold", f"distance {r.get('tolerance')}")
        lines.append(f"| {r['tool']} | {model} | {threshold} | {r['named']}/{people} | {r['unknown']} | "
                     f"{r['wrong']} | {r.get('date', '')} |")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=40)
    parser.add_argument("--weights", nargs="*", default=[None], help="model cards (default: the shipped one)")
    parser.add_argument("--peer-python", default=None, help="a Python with face_recognition installed")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "gallery_40")
    args = parser.parse_args()
    people = choose_people(args.people)
    rows = []
    for weights in args.weights:
        rows.append({"tool": "facegnet", **run_facegnet(people, weights)})
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "answers"}), flush=True)
    if args.peer_python:
        proc = subprocess.run([args.peer_python, "-c", PEER, json.dumps(people)], capture_output=True, text=True,
                              check=True)
        rows.append({"tool": "face_recognition", "tolerance": 0.6, **tally(people, json.loads(proc.stdout))})
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "answers"}), flush=True)
    today = datetime.date.today().isoformat()
    for r in rows:
        r["date"] = today
    result = {"people": len(people), "protocol": "photos 1-2 enrolled, photo 3 identified (largest face)",
              "command": "python benchmarks/gallery_40.py " + " ".join(
                  [f"--people {args.people}"] + (["--weights", *args.weights] if args.weights != [None] else [])
                  + ([f"--peer-python {args.peer_python}"] if args.peer_python else [])),
              "rows": rows, "earlier": earlier_rows(args.out.with_suffix(".json"), rows, len(people))}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    lines = [f"# A new user's gallery: {len(people)} LFW people, two photos enrolled, the third identified", "",
             f"Command: `{result['command']}`", "", *table(rows, len(people))]
    if result["earlier"]:
        lines += ["", "Earlier runs (same photos; not re-measured in this run):", "",
                  *table(result["earlier"], len(people))]
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}.json/.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
