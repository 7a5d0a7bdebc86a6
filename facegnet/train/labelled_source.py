"""Prepare a labelled source of tight face crops (one folder per identity) as training identities, LFW screened out.

    SRC/<Identity>/.../<photo>.jpg   →   OUT/<Identity>/<sub-folders joined by __>__<stem>.png

Steps, each resumable (an identity listed in ``identities.csv`` is done; an interrupted one is redone):

1. **Name screen** (:mod:`facegnet.train.lfw_screen`): an identity whose name matches an LFW person is never read.
2. **Crops**: every photo padded, upscaled and detected (:mod:`facegnet.train.tight_crops`), aligned onto the
   template; photos without a face go to ``report.csv`` and are counted per identity. Each identity's mean
   online-teacher embedding is kept in ``identity_means.npz``.
3. **Face screen**: an identity whose mean is closer to an LFW person's mean than the dev-split threshold is
   refused and its crops deleted.

``manifest.csv`` (``facegnet prepare``'s columns: crop, person, source, face, score, box) lists the crops of the
identities kept, which is what training reads (``extra_data``: :func:`facegnet.train.datasets.load_prepared`
makes each person an identity); ``screen.json`` is the folder's record: the source, the threshold and the dev
statistics behind it, every refused identity with its reason and LFW match, and the counts. Nothing is fatal
but a missing folder or model: a refused identity is skipped, never the run.
"""
from __future__ import annotations

import csv
import json
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from facegnet.errors import DataError, FacegnetError
from facegnet.io import IMAGE_SUFFIXES
from facegnet.train import lfw_screen as S
from facegnet.train.prepare import MANIFEST_FIELDS, REPORT_FIELDS

IDENTITY_FIELDS = ["identity", "photos", "faces", "lost", "seconds"]


@dataclass
class LabelledSummary:
    """What the folder holds after a run (all identities done so far, not only this run's)."""

    identities_kept: int = 0
    faces: int = 0
    photos_read: int = 0
    lost: int = 0
    refused: list[dict] = field(default_factory=list)
    ms_per_photo: float | None = None  # detection, alignment, writing and the teacher, over this run's photos
    threshold: dict = field(default_factory=dict)


def list_identities(src: str | Path) -> dict[str, list[Path]]:
    """``{identity: photos}``: the identity is the first folder under ``src``; photos anywhere below it."""
    src = Path(src)
    if not src.is_dir():
        raise DataError("source folder not found", src)
    found: dict[str, list[Path]] = {}
    for folder in sorted(p for p in src.iterdir() if p.is_dir() and not p.name.startswith(".")):
        photos = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if photos:
            found[folder.name] = photos
    return found


def crop_name(rel: Path) -> str:
    """``Actor/Movie/images/Actor_1.jpg`` → ``Movie__images__Actor_1.png`` (IMFDB reuses file names across movies)."""
    return "__".join(rel.with_suffix("").parts[1:]) + ".png"


def _read_csv(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _append(path: Path, fields: list[str], rows: list[dict]) -> None:
    new = not path.exists()
    with open(path, "a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        if new:
            writer.writeheader()
        writer.writerows(rows)


def _write_csv(path: Path, fields: list[str], rows: list[dict]) -> None:
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)


def prepare_identity(identity: str, photos: list[Path], src: Path, out: Path, detector, embed: S.Embed,
                     batch: int = 64) -> tuple[list[dict], list[dict], np.ndarray | None]:
    """Detect, align and write one identity's crops; returns manifest rows, report rows (lost photos) and the
    sum of the faces' teacher embeddings (None without faces)."""
    from facegnet.io import load_image
    from facegnet.train.tight_crops import align_tight, detect_tight

    folder = out / identity
    folder.mkdir(parents=True, exist_ok=True)
    rows, lost, total = [], [], None
    for start in range(0, len(photos), batch):
        images, rels = [], []
        for path in photos[start : start + batch]:
            rel = path.relative_to(src)
            try:
                images.append(load_image(path))
                rels.append(rel)
            except FacegnetError as exc:
                lost.append({"source": str(rel), "reason": exc.reason})
            except Exception as exc:  # a corrupt file can fail deep inside a decoder
                lost.append({"source": str(rel), "reason": f"unreadable ({exc.__class__.__name__})"})
        crops = []
        for image, rel, face in zip(images, rels, detect_tight(detector, images)):
            if face is None:
                h, w = image.shape[:2]
                lost.append({"source": str(rel), "reason": f"no face found on the padded, upscaled {w}x{h} crop"})
                continue
            crop = align_tight(image, face)
            name = folder / crop_name(rel)
            cv2.imwrite(str(name), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))
            crops.append(crop)
            rows.append({"crop": str(name.relative_to(out)), "person": identity, "source": str(rel), "face": 0,
                         "score": round(float(face.score), 4), "box": " ".join(f"{v:.1f}" for v in face.box)})
        if crops:
            part = S.embed_in_batches(embed, np.stack(crops)).astype(np.float64).sum(0)
            total = part if total is None else total + part
    return rows, lost, total


def _load_means(path: Path, teacher_sha: str) -> dict[str, tuple[np.ndarray, int]]:
    saved = S.PeopleMeans.load(path, teacher=teacher_sha)
    return {} if saved is None else {n: (m, int(c)) for n, m, c in zip(saved.names, saved.means, saved.counts)}


def _save_means(path: Path, means: dict[str, tuple[np.ndarray, int]], teacher_sha: str) -> None:
    names = sorted(means)
    dim = len(next(iter(means.values()))[0]) if means else 0
    S.PeopleMeans(names, np.array([means[n][0] for n in names], np.float32).reshape(len(names), dim),
                  np.array([means[n][1] for n in names])).save(path, teacher=teacher_sha)


def prepare_labelled(src: str | Path, out: str | Path, lfw: str | Path, teacher_model: str | Path,
                     pack: str | Path, identities: list[str] | None = None,
                     lfw_detection_cache: str | Path | None = None, extra_names: set[str] | None = None,
                     source: dict | None = None, threads: int = 0, log=None) -> LabelledSummary:
    """Prepare ``src``'s identities into ``out`` with LFW's people refused (see the module docstring).

    ``identities`` limits the run to those folder names (a later run without it continues); ``extra_names`` are
    more names to refuse (e.g. from ``--exclude-names``); ``source`` is recorded in ``screen.json``; refusals and
    progress go to ``log`` (default: standard error).
    """
    from facegnet.train.teacher import OnlineTeacher
    from facegnet.train.tight_crops import tight_crop_detector

    src, out, log = Path(src), Path(out), log or sys.stderr
    found = list_identities(src)
    if identities:
        unknown = sorted(set(identities) - set(found))
        if unknown:
            raise DataError(f"no identity folder {unknown[0]!r} (of {len(found)})", src)
        found = {k: v for k, v in found.items() if k in set(identities)}
    teacher = OnlineTeacher(teacher_model, threads=threads)
    embed = S.teacher_embedder(teacher)
    names = S.NameScreen([*S.lfw_people(lfw), *(extra_names or ())])
    out.mkdir(parents=True, exist_ok=True)

    refused: dict[str, S.Refusal] = {}
    for identity in found:
        match = names.match(identity)
        if match is not None:
            refused[identity] = S.Refusal(identity, "name", match)
            print(refused[identity].line(), file=log)

    done = {r["identity"]: {**r, **{k: int(r[k]) for k in ("photos", "faces", "lost")}}
            for r in _read_csv(out / "identities.csv")}
    means = _load_means(out / "identity_means.npz", teacher.sha256)
    done = {k: v for k, v in done.items() if k in means or v["faces"] == 0}
    detector = tight_crop_detector(threads=threads or None)
    started, photos_run = time.perf_counter(), 0
    for identity, photos in found.items():
        if identity in refused or identity in done:
            continue
        t0 = time.perf_counter()
        rows, lost, total = prepare_identity(identity, photos, src, out, detector, embed)
        photos_run += len(photos)
        if total is not None:
            means[identity] = (S.unit(total), len(rows))
            _save_means(out / "identity_means.npz", means, teacher.sha256)
        _append(out / "detected.csv", MANIFEST_FIELDS, rows)
        _append(out / "report.csv", REPORT_FIELDS, lost)
        row = {"identity": identity, "photos": len(photos), "faces": len(rows), "lost": len(lost),
               "seconds": round(time.perf_counter() - t0, 1)}
        _append(out / "identities.csv", IDENTITY_FIELDS, [row])
        done[identity] = row
        print(f"{identity}: {len(rows)} faces of {len(photos)} photos ({len(lost)} lost), {row['seconds']} s",
              file=log, flush=True)
    elapsed = time.perf_counter() - started

    threshold = screen_threshold(pack, embed)
    lfw_cache = out / "lfw_means.npz"
    lfw_people = S.PeopleMeans.load(lfw_cache, teacher=teacher.sha256, lfw=str(Path(lfw).resolve()))
    if lfw_people is None:
        lfw_people = S.lfw_means(lfw, embed, lfw_detection_cache, progress=log.isatty())
        lfw_people.save(lfw_cache, teacher=teacher.sha256, lfw=str(Path(lfw).resolve()))
    screened = [n for n in done if n in means and n not in refused]
    candidates = S.PeopleMeans(screened, np.array([means[n][0] for n in screened], np.float32).reshape(
        len(screened), -1), np.array([means[n][1] for n in screened]))
    for identity, refusal in S.face_screen(candidates, lfw_people, threshold.value).items():
        refused[identity] = refusal
        print(refusal.line(), file=log)
    for identity in refused:
        if (out / identity).is_dir():
            shutil.rmtree(out / identity)  # an LFW person's faces must not sit in a training folder

    kept = {n for n in done if n not in refused}
    detected = {r["crop"]: r for r in _read_csv(out / "detected.csv") if r["person"] in kept}  # dedupes a redo
    _write_csv(out / "manifest.csv", MANIFEST_FIELDS, list(detected.values()))
    summary = LabelledSummary(
        identities_kept=len({r["person"] for r in detected.values()}),
        faces=len(detected),
        photos_read=sum(done[n]["photos"] for n in kept),
        lost=sum(done[n]["lost"] for n in kept),
        refused=[vars(refused[n]) for n in sorted(refused)],
        ms_per_photo=round(1000 * elapsed / photos_run, 2) if photos_run else None,
        threshold=threshold.to_dict(),
    )
    nearest = {}
    for n in screened:  # each kept identity's nearest LFW person, to audit the screen
        name, score = lfw_people.nearest(means[n][0])
        nearest[n] = {"lfw_name": name, "similarity": round(score, 4)}
    record = {"source": source or {}, "teacher": {"model": str(teacher.path), "sha256": teacher.sha256},
              "lfw": str(lfw), "pack": str(pack), **vars(summary),
              "identities": {n: {**{k: done[n][k] for k in ("photos", "faces", "lost")},
                                 "status": "refused" if n in refused else "kept", **nearest.get(n, {})}
                             for n in sorted(done)},
              "refused_by_name_unread": sorted(n for n, r in refused.items() if r.reason == "name")}
    (out / "screen.json").write_text(json.dumps(record, indent=1, default=str) + "\n")
    return summary


def screen_threshold(pack: str | Path, embed: S.Embed) -> S.Threshold:
    """The face screen's threshold from the teacher's embeddings of the pack's dev faces
    (:func:`facegnet.train.lfw_screen.dev_threshold`)."""
    from facegnet.train.datasets import load_pack

    dev = load_pack(pack, "dev", min_faces=1, teacher=None)
    return S.dev_threshold(S.embed_in_batches(embed, dev.images), dev.labels)
