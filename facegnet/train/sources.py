"""Rebuild the extra training faces from pinned public snapshots, in one command.

    python -m facegnet.train.sources --snapshot fairface=GIT_DIR --snapshot utkface=GIT_DIR \\
        --exclude-names ../shared/data/lfw/people.txt --out data/extra --workers 2
    python -m facegnet.train.sources --snapshot imfdb=GIT_DIR --out ../data/imfdb_prepared

Each source is a public git repository at a pinned commit (``../shared/README.md``, "More faces"); ``GIT_DIR``
is a local clone or bare mirror of it. The folder is taken with ``git archive`` at exactly that commit into
``OUT/src/<name>``, and its faces are prepared into ``OUT/<name>`` (the folder name is how a run's licence line
finds the source again). Nothing here is ever committed; every step is resumable.

- **Unlabelled** sources (FairFace, UTKFace) go through ``facegnet prepare --unlabelled`` (MTCNN, ArcFace
  alignment): faces without identity, which teach through the online teacher only. Person folders named in
  ``--exclude-names`` (LFW's ``people.txt``) are refused.
- **Labelled** sources (IMFDB: one folder per actor) become identities (:mod:`facegnet.train.labelled_source`):
  their tight crops are padded and upscaled before MTCNN, and an identity that is an LFW person is refused,
  skipped and listed, both by name (``--lfw``'s people, CamelCase split and folded) and by face (its mean
  online-teacher embedding against each LFW person's, above a threshold taken from the teacher's statistics on
  ``--pack``'s dev split).
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
    labelled: bool = False  # one folder per identity (prepared as identities, screened against LFW)


SOURCES: dict[str, Source] = {
    s.name: s
    for s in (
        Source("fairface", "sumanvithaeadala/EthnicityDetection", "9b001ff28a8a2e7840bcf1c01c8efb97d22471e8",
               "fair_face", "CC BY 4.0", 45_000),
        Source("utkface", "Mohanish-5744/Major_Ensemble_Gender", "2f8aa4a5932c395d465f4f58d864b6a17a1b03f6",
               "crop_part1", "non-commercial research", 9_780),
        Source("imfdb", "rmn8/Image-recognition-to-detect-expression", "4bd6eb78911e9b18351c51205ba78c7c856bc27d",
               "IMFDB_final", "research use (IMFDB, from an unofficial mirror)", 34_390, labelled=True),
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


def build(snapshots: dict[str, Path], out: Path, exclude_names: Path | None, workers: int = 1,
          screen: dict | None = None) -> dict[str, dict]:
    """Unpack and prepare every named source into ``out/<name>``; returns a summary per source.

    ``screen`` holds what labelled sources need (:func:`facegnet.train.labelled_source.prepare_labelled`'s
    ``lfw``, ``teacher_model``, ``pack`` and optionally ``identities``, ``lfw_detection_cache``, ``threads``).
    """
    from facegnet.train.prepare import prepare, read_excluded_names

    unknown = sorted(set(snapshots) - set(SOURCES))
    if unknown:
        raise DataError(f"unknown source {unknown[0]!r} (known: {', '.join(SOURCES)})")
    summary = {}
    for name, git_dir in snapshots.items():
        source = SOURCES[name]
        photos = unpack(source, Path(git_dir), out / "src" / name)
        if source.labelled:
            from facegnet.train.labelled_source import prepare_labelled

            extra = read_excluded_names(exclude_names) if exclude_names is not None else set()
            result = prepare_labelled(photos, out / name, extra_names=extra, source=asdict(source), **(screen or {}))
        else:
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
    parser.add_argument("--workers", type=int, default=1, help="processes for unlabelled sources")
    labelled = parser.add_argument_group("labelled sources (identities screened against LFW)")
    labelled.add_argument("--lfw", default="../shared/data/lfw", help="LFW (images/<Name>/): whose people are refused")
    labelled.add_argument("--teacher-model", default="../shared/models/face-reidentification-retail-0095",
                          help="the online teacher (OpenVINO) whose embeddings compare faces")
    labelled.add_argument("--pack", default="../shared/data/train",
                          help="training pack whose dev split sets the face screen's threshold")
    labelled.add_argument("--identities", help="comma-separated identity folders to prepare now (default: all)")
    labelled.add_argument("--lfw-detection-cache", help="SQLite detection cache of the LFW photos "
                          "(as `facegnet eval lfw --detection-cache` keeps)")
    labelled.add_argument("--threads", type=int, default=0, help="CPU threads for MTCNN and the teacher (0: default)")
    args = parser.parse_args(argv)

    def run() -> int:
        snapshots = named_paths(args.snapshot, "--snapshot", "GIT_DIR")
        screen = {"lfw": args.lfw, "teacher_model": args.teacher_model, "pack": args.pack,
                  "identities": [i.strip() for i in args.identities.split(",") if i.strip()] if args.identities
                  else None, "lfw_detection_cache": args.lfw_detection_cache, "threads": args.threads}
        print(json.dumps(build(snapshots, Path(args.out), args.exclude_names, args.workers, screen)))
        return 0

    return one_line_errors(run)

if __name__ == "__main__":
    raise SystemExit(main())
