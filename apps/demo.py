#!/usr/bin/env python3
"""The facegnet demo: detect, align, embed and verify the sample photos that ship with the package.

    python apps/demo.py            (or: make demo)
"""
from __future__ import annotations

import sys
from itertools import combinations
from pathlib import Path

import facegnet
from facegnet import FaceRecognizer
from facegnet.errors import FacegnetError

SAMPLES = Path(facegnet.__file__).resolve().parent / "assets"  # ship with the package


def main() -> int:
    photos = sorted(SAMPLES.glob("*.jpg"))
    recognizer = FaceRecognizer()
    card = recognizer.card
    print(f"model: {card.name} ({'trained' if card.trained else 'UNTRAINED: results are near chance'}), "
          f"threshold {recognizer.threshold:.3f}")
    try:
        for photo in photos:
            faces = recognizer.detect(photo)
            boxes = ", ".join(f"[{', '.join(f'{v:.0f}' for v in f.box)}] p={f.score:.3f}" for f in faces)
            print(f"{photo.name}: {len(faces)} face(s) {boxes}")
        print()
        for a, b in combinations(photos, 2):
            result = recognizer.verify(a, b)
            verdict = "same person     " if result.same else "different people"
            print(f"{verdict} {result.similarity:+.3f}  {a.name} ~ {b.name}")
    except FacegnetError as exc:
        print(f"facegnet: error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(f"\nthe same from the command line: facegnet verify {photos[0]} {photos[1]} --json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
