"""Verifying many pairs from a CSV: each distinct image is embedded once, in batches.

The CSV has two columns of image paths (a header such as ``a,b`` is optional and recognised; any further
columns are carried through to the results). Relative paths are resolved against the CSV's folder, never the
working directory, so a pairs file means the same wherever it is run from.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from facegnet.errors import DataError
from facegnet.io import IMAGE_SUFFIXES

RESULT_FIELDS = ["a", "b", "similarity", "same", "threshold", "error"]


@dataclass
class PairRow:
    """One line of a pairs CSV: the two image paths (resolved) and any further columns, by header name."""

    a: str
    b: str
    extra: dict[str, str]


def read_pairs_csv(path: str | Path) -> list[PairRow]:
    """Read a pairs CSV (two path columns, optional header)."""
    path = Path(path)
    if not path.is_file():
        raise DataError("pairs file not found", path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            rows = [row for row in csv.reader(handle) if any(cell.strip() for cell in row)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"unreadable CSV ({exc})", path) from None
    if not rows:
        raise DataError("no pairs in the file", path)
    header = None
    first = [cell.strip() for cell in rows[0]]
    if len(first) >= 2 and not _looks_like_image(path.parent, first[0]):
        header, rows = first, rows[1:]
    pairs = []
    for number, row in enumerate(rows, 2 if header else 1):
        if len(row) < 2 or not row[0].strip() or not row[1].strip():
            raise DataError(f"line {number}: expected two image paths", path)
        extra = dict(zip(header[2:], row[2:])) if header else {f"col{i}": v for i, v in enumerate(row[2:], 3)}
        pairs.append(PairRow(_resolve(path.parent, row[0]), _resolve(path.parent, row[1]), extra))
    if not pairs:
        raise DataError("no pairs in the file", path)
    return pairs


def _resolve(base: Path, cell: str) -> str:
    """An absolute path as given; a relative one inside the CSV's folder (as the README promises)."""
    candidate = Path(cell.strip()).expanduser()
    return str(candidate if candidate.is_absolute() else base / candidate)


def _looks_like_image(base: Path, cell: str) -> bool:
    name = cell.strip().lower()
    return name.endswith(tuple(IMAGE_SUFFIXES)) or Path(_resolve(base, cell)).is_file()


@dataclass
class PairsResult:
    """The rows of :func:`verify_pairs` and the images that failed."""

    rows: list[dict]
    #: one "path: reason" line per bad image, in first-use order, with its error class's exit code
    failures: dict[str, int] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        """0 when every pair was verified; else the exit code of the failures' cause (as for single images:
        2 for a missing, unreadable or non-image file, 3 for no usable face). When causes are mixed, the lowest
        code wins: a bad file is reported before a faceless photo."""
        return min(self.failures.values(), default=0)


def verify_pairs(recognizer, pairs: list[PairRow], threshold: float | None = None,
                 progress: bool = False) -> PairsResult:
    """One result row per pair: similarity, decision, threshold, and the error when an image failed."""
    threshold = recognizer.threshold if threshold is None else float(threshold)
    images = list(dict.fromkeys(p for pair in pairs for p in (pair.a, pair.b)))
    results = dict(zip(images, recognizer.embed_images(images, progress=progress and "images")))
    rows, failures = [], {}
    for pair in pairs:
        ra, rb = results[pair.a], results[pair.b]
        row = {"a": pair.a, "b": pair.b, "similarity": "", "same": "", "threshold": threshold, "error": ""}
        if ra.ok and rb.ok:
            similarity = float(np.dot(ra.embedding, rb.embedding))
            row.update(similarity=round(similarity, 6), same=similarity >= threshold)
        else:
            bad = [r for r in (ra, rb) if not r.ok]
            row["error"] = "; ".join(f"{r.source}: {r.error}" for r in bad)
            for r in bad:
                failures.setdefault(f"{r.source}: {r.error}", r.exit_code or 1)
        row.update(pair.extra)
        rows.append(row)
    return PairsResult(rows, failures)


def write_results_csv(rows: list[dict], path: str | Path | None) -> None:
    """Write result rows to ``path`` (``None`` or ``-``: standard output)."""
    import sys

    fields = RESULT_FIELDS + [k for k in rows[0] if k not in RESULT_FIELDS] if rows else RESULT_FIELDS
    if path in (None, "-"):
        writer = csv.DictWriter(sys.stdout, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(target.name + ".tmp")
    with open(temporary, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    temporary.replace(target)  # never leave a half-written results file
