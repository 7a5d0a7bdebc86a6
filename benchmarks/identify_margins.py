#!/usr/bin/env python3
"""The margins behind the model-dependent gallery and live tests, for the weights given (default: the shipped ones).

tests/test_gallery.py enrolls photos 1 and 2 of three LFW people and names their photo 3 at the card's
identification threshold, with a stranger left "unknown"; tests/test_live.py enrolls photo 2 of three people and
shows photo 1. Those tests should fail on a regression of the model, not on noise: this prints how far each
decision is from the threshold, so their comments can quote it after a ship. Writes
benchmarks/results/identify_margins.json.

    python benchmarks/identify_margins.py [--weights CARD]
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
TESTS = HERE.parent / "tests"
LFW = HERE.parent.parent / "shared" / "data" / "lfw" / "images"


def test_module(test_file: str):
    """One of the tests' modules, imported by path: the people measured here are the tests' own, not a copy."""
    if str(TESTS) not in sys.path:  # the tests import their shared helpers from conftest, as pytest lets them
        sys.path.insert(0, str(TESTS))
    spec = importlib.util.spec_from_file_location(Path(test_file).stem, TESTS / test_file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tested_people() -> tuple[dict, dict]:
    """The gallery test's and the live test's enrolled people and stranger."""
    gallery, live = test_module("test_gallery.py"), test_module("test_live.py")
    return ({"enrolled": list(gallery.ENROLLED), "stranger": gallery.STRANGER.parent.name},
            {"enrolled": list(live.ENROLLED), "stranger": live.STRANGER})


def photo(name: str, number: int) -> Path:
    return LFW / name / f"{name}_{number:04d}.jpg"


def gallery_margins(recognizer, test: dict) -> dict:
    """Photo 3 of each enrolled person against the gallery of photos 1-2: own score and runner-up; the stranger's
    best score."""
    from facegnet.gallery import Gallery

    people = test["enrolled"]
    out: dict = {"own": {}, "runner_up": {}}
    with tempfile.TemporaryDirectory() as tmp, Gallery(Path(tmp) / "g", recognizer=recognizer, create=True) as g:
        for name in people:
            for number in (1, 2):
                g.enroll(name, photo(name, number))
        for name in people:
            found = g.identify(photo(name, 3), threshold=0.0, top_k=len(people))[0]
            scores = {c.name: round(float(c.similarity), 4) for c in found.candidates}
            out["own"][name] = scores[name]
            out["runner_up"][name] = max(v for k, v in scores.items() if k != name)
        out["stranger_best"] = round(float(g.identify(photo(test["stranger"], 1), threshold=0.0)[0].similarity), 4)
    return out


def live_margins(recognizer, test: dict) -> dict:
    """Photo 1 against photo 2 of the same person, and every other pairing of the live test's photos."""
    people = test["enrolled"] + [test["stranger"]]
    shown = {n: recognizer.embed_largest(photo(n, 1))[0] for n in people}
    enrolled = {n: recognizer.embed_largest(photo(n, 2))[0] for n in test["enrolled"]}
    same = {n: round(float(np.dot(shown[n], enrolled[n])), 4) for n in enrolled}
    others = max(float(np.dot(shown[a], enrolled[b])) for a in shown for b in enrolled if a != b)
    return {"same": same, "others_max": round(others, 4)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default=None, help="model card (default: the shipped model)")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "identify_margins.json")
    args = parser.parse_args()
    if not LFW.is_dir():
        print(f"identify_margins.py: LFW photos not found at {LFW}", file=sys.stderr)
        return 2
    from facegnet.errors import FacegnetError
    from facegnet.recognizer import FaceRecognizer

    try:
        recognizer = FaceRecognizer(weights=args.weights) if args.weights else FaceRecognizer()
    except FacegnetError as error:
        print(f"identify_margins.py: {error}", file=sys.stderr)
        return 2
    card = recognizer.card
    gallery_test, live_test = tested_people()
    result = {"model": card.name, "sha256": card.sha256, "identify_threshold": card.open_set_threshold,
              "gallery_test": gallery_margins(recognizer, gallery_test), "live_test": live_margins(recognizer, live_test),
              "command": "python benchmarks/identify_margins.py" + (f" --weights {args.weights}" if args.weights else "")}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
