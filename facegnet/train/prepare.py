"""Prepare training data: detect and align every photo of a folder into 112×112 crops with a manifest.

``SRC`` holds one sub-folder per person (``SRC/<person>/*.jpg``) or loose photos (unlabelled faces, e.g. for
distillation). ``OUT`` receives ``<person>/<photo stem>.png`` crops (loose photos go to ``OUT/_unlabelled``
unless ``--all-faces``, which keeps every face of a photo as ``<stem>_<k>.png``), ``manifest.csv`` (one row per
crop: crop, person, source, face index, score, box) and ``report.csv`` (one row per photo that gave no crop:
unreadable file, no face, face too small). Both CSVs are appended photo by photo, so an interrupted run
continues where it stopped; nothing is fatal but a missing source folder.
"""
from __future__ import annotations

import csv
import os
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from facegnet.errors import DataError, FacegnetError
from facegnet.io import IMAGE_SUFFIXES

MANIFEST_FIELDS = ["crop", "person", "source", "face", "score", "box"]
REPORT_FIELDS = ["source", "reason"]
UNLABELLED = "_unlabelled"


@dataclass
class PrepareSummary:
    """What a prepare run did (counts cover this run only; ``skipped`` were done by an earlier run)."""

    photos: int = 0
    crops: int = 0
    failed: int = 0
    skipped: int = 0


def list_photos(src: Path, unlabelled: bool = False) -> list[tuple[Path, str]]:
    """``(photo, person)`` for every image under ``src``; person is "" for loose photos (every photo when
    ``unlabelled``: sub-folders are then only a layout, e.g. a data set's ``train/`` and ``val/``)."""
    photos = []
    for path in sorted(src.rglob("*")):
        if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
            rel = path.relative_to(src)
            photos.append((path, rel.parts[0] if len(rel.parts) > 1 and not unlabelled else ""))
    return photos


def read_excluded_names(path: str | Path) -> set[str]:
    """Person names never to train on, normalised (case, spaces/underscores): LFW's ``people.txt`` (name
    and count per line, a bare count line first) or a plain list of names, one per line."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as exc:
        raise DataError(f"cannot read the excluded names ({exc.strerror or exc.__class__.__name__})", path) from None
    names = set()
    for line in lines:
        parts = line.split("\t") if "\t" in line else [line]
        name = parts[0].strip()
        if name and not name.isdigit():
            names.add(normalise_name(name))
    return names


def normalise_name(name: str) -> str:
    """``"George W Bush"``, ``"george_w_bush"`` → ``"george w bush"``."""
    return " ".join(name.replace("_", " ").replace("-", " ").lower().split())


# One detector per worker process, created on first use.
_DETECTOR = None


def _init_worker(min_face_size: int, threads: int) -> None:
    import torch

    torch.set_num_threads(max(1, threads))
    global _DETECTOR
    from facegnet.detection.detector import Detector

    _DETECTOR = Detector(min_face_size=min_face_size)


def _process(job: tuple[str, str, str, str, bool, int]) -> tuple[list[dict], list[dict]]:
    """Detect + align one photo; returns manifest rows and report rows (never raises for a bad photo)."""
    import cv2

    from facegnet.align import align_face
    from facegnet.io import load_image

    photo, person, rel, out, all_faces, min_face_size = job
    try:
        image = load_image(photo)
        faces = _DETECTOR.detect(image)
    except FacegnetError as exc:
        return [], [{"source": rel, "reason": exc.reason}]
    except Exception as exc:  # a corrupt file can fail deep inside a decoder
        return [], [{"source": rel, "reason": f"unreadable ({exc.__class__.__name__})"}]
    faces = [f for f in faces if f.size >= min_face_size]
    if not faces:
        return [], [{"source": rel, "reason": f"no face of at least {min_face_size} px"}]
    if not all_faces:
        faces = [max(faces, key=lambda f: f.area * f.score)]  # as the shared pack chose
    folder = Path(out) / (person or UNLABELLED)
    folder.mkdir(parents=True, exist_ok=True)
    # Loose photos from different sub-folders (train/1.jpg, val/1.jpg) must not overwrite each other's crops.
    stem = Path(rel).stem if person else "__".join(Path(rel).with_suffix("").parts)
    rows = []
    for k, face in enumerate(faces):
        name = f"{stem}.png" if len(faces) == 1 and not all_faces else f"{stem}_{k}.png"
        crop = align_face(image, face.landmarks)
        cv2.imwrite(str(folder / name), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))
        rows.append({"crop": str((folder / name).relative_to(out)), "person": person, "source": rel, "face": k,
                     "score": round(float(face.score), 4), "box": " ".join(f"{v:.1f}" for v in face.box)})
    return rows, []


def _done_sources(out: Path) -> set[str]:
    done: set[str] = set()
    for name in ("manifest.csv", "report.csv"):
        path = out / name
        if path.exists():
            with open(path, newline="") as handle:
                done.update(row["source"] for row in csv.DictReader(handle))
    return done


def _appender(path: Path, fields: list[str]):
    new = not path.exists()
    handle = open(path, "a", newline="")
    writer = csv.DictWriter(handle, fieldnames=fields)
    if new:
        writer.writeheader()
    return handle, writer


def prepare(src: str | Path, out: str | Path, workers: int = 1, min_face_size: int = 20, all_faces: bool = False,
            progress: bool = True, unlabelled: bool = False, exclude_names: str | Path | None = None) -> PrepareSummary:
    """Detect and align every photo of ``src`` into ``out`` (see the module docstring); resumable.

    ``exclude_names`` (e.g. LFW's ``people.txt``) refuses the whole run when a person folder carries one of
    its names: an evaluation set's people must never be trained on.
    """
    src, out = Path(src), Path(out)
    if not src.is_dir():
        raise DataError("source folder not found", src)
    photos = list_photos(src, unlabelled)
    if exclude_names is not None:
        excluded = read_excluded_names(exclude_names)
        clash = sorted({person for _, person in photos if person and normalise_name(person) in excluded})
        if clash:
            more = f" and {len(clash) - 3} more" if len(clash) > 3 else ""
            raise DataError(f"{len(clash)} person folder(s) name people of the excluded list "
                            f"({', '.join(clash[:3])}{more}); remove them first", src)
    out.mkdir(parents=True, exist_ok=True)
    done = _done_sources(out)
    summary = PrepareSummary(skipped=sum(1 for p, _ in photos if str(p.relative_to(src)) in done))
    jobs = [(str(p), person, str(p.relative_to(src)), str(out), all_faces, min_face_size)
            for p, person in photos if str(p.relative_to(src)) not in done]
    man_handle, manifest = _appender(out / "manifest.csv", MANIFEST_FIELDS)
    rep_handle, report = _appender(out / "report.csv", REPORT_FIELDS)
    workers = max(1, workers)
    threads = max(1, (os.cpu_count() or 1) // workers)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(jobs), unit="photo", dynamic_ncols=True)
    try:
        for rows, failures in _run(jobs, workers, min_face_size, threads):
            summary.photos += 1
            summary.crops += len(rows)
            summary.failed += len(failures)
            manifest.writerows(rows)
            report.writerows(failures)
            man_handle.flush()
            rep_handle.flush()
            if bar is not None:
                bar.update(1)
    finally:
        man_handle.close()
        rep_handle.close()
        if bar is not None:
            bar.close()
    return summary


def _run(jobs: list, workers: int, min_face_size: int, threads: int) -> Iterator[tuple[list[dict], list[dict]]]:
    if workers == 1:
        _init_worker(min_face_size, threads)
        yield from map(_process, jobs)
        return
    with ProcessPoolExecutor(workers, initializer=_init_worker, initargs=(min_face_size, threads)) as pool:
        yield from pool.map(_process, jobs, chunksize=4)
