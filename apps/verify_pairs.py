#!/usr/bin/env python3
"""Verify many pairs of photos from a CSV file (the same as ``facegnet verify --pairs``).

    python apps/verify_pairs.py pairs.csv --out results.csv [--threshold T] [--weights W]

The CSV holds two columns of image paths (header optional); each distinct image is embedded once, in batches.
"""
import sys

from facegnet.cli import main

if __name__ == "__main__":
    arguments = sys.argv[1:]
    if not arguments or arguments[0].startswith("-"):
        print(__doc__.strip(), file=sys.stderr)
        sys.exit(2)
    sys.exit(main(["verify", "--pairs", *arguments]))
