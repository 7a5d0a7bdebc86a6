"""Rebuild the extra training faces from pinned public snapshots, in one command.

    python -m facegnet.train.sources --snapshot fairface=GIT_DIR --snapshot utkface=GIT_DIR \\
        --exclude-names ../shared/data/lfw/people.txt --out data/extra --workers 2

Each source is a public git repository at a pinned commit (``../shared/README.md``, "More faces"); ``GIT_DIR``
is a local clone or bare mirror of it. The folder is taken with ``git archive`` at exactly that commit into
``OUT/src/<name>``, and its faces are prepared into ``OUT/<name>`` (the folder name is how a run's licence line
finds the source again). Nothing here is ever committed; every step is resumable.

The sources go through ``facegnet prepare --unlabelled`` (MTCNN, ArcFace alignment): faces without identity,
which teach through the online teacher only. Person folders named in ``--exclude-names`` (LFW's ``people.txt``)
are refused.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from facegnet.errors import DataError, named_paths, one_line_errors


@dataclass(frozen=True)
class Source:
    """A pinned folder of face photos in a public repository."""

    name: str
    repository: str
    commit: str
    folder: str
    licence: str
    photos: int


SOURCES: dict[str, Source] = {
    s.name: s
    for s in (
        Source("fairface", "sumanvithaeadala/EthnicityDetection", "9b001ff28a8a2e7840bcf1c01c8efb97d22471e8",
               "fair_face", "CC BY 4.0", 45_000),
        Source("utkface", "Mohanish-5744/Major_Ensemble_Gender", "2f8aa4a5932c395d465f4f58d864b6a17a1b03f6",
               "crop_part1", "non-commercial research", 9_780),
    )
}


def unpack(source: Source, git_dir: Path, dest: Path) -> Path:
    """``git archive`` the source's folder at its pinned commit into ``dest``; returns the photo folder."""
    target = dest / source.folder
    if target.is_dir() and any(target.iterdir()):
        return target
    dest.mkdir(parents=True, exist_ok=True)
    try:
        archive = subprocess.run(["git", f"--git-dir={git_dir}", "archive", source.commit, source.folder],
                                 check=True, capture_output=True)
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True, capture_output=True)
    except FileNotFoundError as exc:
        raise DataError(f"{exc.filename} is not installed") from None
    except subprocess.CalledProcessError as exc:
        reason = exc.stderr.decode(errors="replace").strip().splitlines()
        raise DataError(f"cannot unpack {source.repository}@{source.commit[:10]} ({reason[0] if reason else exc})",
                        git_dir) from None
    return target


def build(snapshots: dict[str, Path], out: Path, exclude_names: Path | None, workers: int = 1) -> dict[str, dict]:
    """Unpack and prepare every named source into ``out/<name>``; returns a summary per source."""
    from facegnet.train.prepare import prepare

    unknown = sorted(set(snapshots) - set(SOURCES))
    if unknown:
        raise DataError(f"unknown source {unknown[0]!r} (known: {', '.join(SOURCES)})")
    summary = {}
    for name, git_dir in snapshots.items():
        source = SOURCES[name]
        photos = unpack(source, Path(git_dir), out / "src" / name)
        result = prepare(photos, out / name, workers=workers, unlabelled=True, exclude_names=exclude_names,
                         progress=sys.stderr.isatty())
        summary[name] = {**asdict(result), "licence": source.licence, "commit": source.commit}
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m facegnet.train.sources", description=__doc__.split("\n\n")[0])
    parser.add_argument("--snapshot", action="append", default=[], metavar="NAME=GIT_DIR",
                        help=f"a source and its local git clone/mirror ({', '.join(SOURCES)})")
    parser.add_argument("--out", required=True, help="folder for the unpacked photos and the crops")
    parser.add_argument("--exclude-names", help="refuse person folders named here (LFW's people.txt)")
    parser.add_argument("--workers", type=int, default=1, help="processes per source")
    args = parser.parse_args(argv)

    def run() -> int:
        snapshots = named_paths(args.snapshot, "--snapshot", "GIT_DIR")
        print(json.dumps(build(snapshots, Path(args.out), args.exclude_names, args.workers)))
        return 0

    return one_line_errors(run)


if __name__ == "__main__":
    raise SystemExit(main())
