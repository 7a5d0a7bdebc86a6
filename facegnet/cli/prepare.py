"""``facegnet prepare SRC OUT``: detect and align a folder of photos into 112×112 training crops.

    facegnet prepare photos/ crops/ --workers 2
    facegnet train --data crops/ --distill none --init facegnet/weights/facegnet-default.pt --out runs/ft
"""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from typing import Any


def register(subparsers: Any) -> None:
    """Add the ``prepare`` sub-command."""
    parser = subparsers.add_parser(
        "prepare",
        help="detect and align a folder of photos into training crops (resumable)",
        description="SRC holds one sub-folder per person, or loose photos of unlabelled faces. OUT receives "
        "the crops, manifest.csv and report.csv (photos that gave no crop). Run again to continue.",
    )
    parser.add_argument("src", help="folder of photos")
    parser.add_argument("out", help="folder for the crops")
    parser.add_argument("--workers", type=int, default=1, help="parallel processes (default: 1)")
    parser.add_argument("--min-face-size", type=int, default=20, metavar="PX", help="smallest face side (default: 20)")
    parser.add_argument("--all-faces", action="store_true", help="keep every face of a photo, not only the largest")
    parser.add_argument("--unlabelled", action="store_true",
                        help="every photo is an unlabelled face (sub-folders are layout, not people)")
    parser.add_argument("--exclude-names", metavar="FILE",
                        help="refuse person folders named in FILE (e.g. LFW's people.txt: never train on LFW people)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from facegnet.train.prepare import prepare

    summary = prepare(args.src, args.out, workers=args.workers, min_face_size=args.min_face_size,
                      all_faces=args.all_faces, progress=not args.no_progress,
                      unlabelled=args.unlabelled, exclude_names=args.exclude_names)
    print(json.dumps(asdict(summary)))
    return 0
