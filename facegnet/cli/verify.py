"""``facegnet verify A B`` and ``facegnet verify --pairs PAIRS.csv``."""
from __future__ import annotations

import argparse
import sys

from facegnet.cli.common import add_model_options, make_recognizer, print_json, untrained_warning, warn
from facegnet.errors import DataError


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "verify",
        help="are two photos the same person?",
        description="Compare the largest face of two photos, or every pair of a CSV file.",
    )
    parser.add_argument("images", nargs="*", metavar="IMAGE", help="two photos")
    parser.add_argument("--pairs", metavar="CSV", help="CSV of image pairs (two path columns; header optional)")
    parser.add_argument("--out", metavar="CSV", help="with --pairs: write results here (default: stdout)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_model_options(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.pairs:
        if args.images:
            raise DataError("give either two images or --pairs, not both")
        return _run_pairs(args)
    if len(args.images) != 2:
        raise DataError(f"verify needs exactly two images (got {len(args.images)}), or --pairs CSV")
    recognizer = make_recognizer(args)
    result = recognizer.verify(args.images[0], args.images[1], threshold=args.threshold)
    untrained_warning(recognizer)  # after the work, so a bad input still gives exactly one line
    if args.json:
        print_json({"a": args.images[0], "b": args.images[1], **result.to_dict()})
    else:
        for note in result.notes:
            print(f"note: {note}")
        verdict = "same person" if result.same else "different people"
        print(f"{verdict}: similarity {result.similarity:.4f} (threshold {result.threshold:.4f})")
    return 0


def _run_pairs(args: argparse.Namespace) -> int:
    from facegnet.evaluation.pairs import read_pairs_csv, verify_pairs, write_results_csv

    pairs = read_pairs_csv(args.pairs)
    recognizer = make_recognizer(args)
    untrained_warning(recognizer)
    result = verify_pairs(recognizer, pairs, args.threshold, progress=not args.quiet and sys.stderr.isatty())
    rows = result.rows
    if args.json:
        for row in rows:
            print_json(row)
    else:
        write_results_csv(rows, args.out)
    for line in result.failures:
        print(f"facegnet: error: {line}", file=sys.stderr)
    done = sum(1 for row in rows if not row["error"])
    if args.out:
        print(f"{done} of {len(rows)} pairs verified; results in {args.out}", file=sys.stderr)
    if result.failures:
        warn(f"{len(rows) - done} pairs could not be verified (their rows carry the error)")
    return result.exit_code
