"""Training faces: crops held in memory as uint8, with labels and optional stored teacher embeddings.

Two sources give the same :class:`FaceSet`:

- the shared training pack (``manifest.csv``, ``crops/``, ``teacher_dlib.npy``; see its README), read by
  :func:`load_pack`;
- a folder of 112×112 crops, one sub-folder per person (or a flat folder of unlabelled faces), read by
  :func:`load_folder`, or the ``manifest.csv`` that ``facegnet prepare`` writes, read by :func:`load_prepared`.

Crops are decoded once and kept as one uint8 array (20k crops are ~770 MB); decoding is the slow part, so the
array can be cached to an ``.npy`` file. :func:`training_faces` and :func:`load_dev` read what a
:class:`~facegnet.train.config.TrainConfig` names.
"""
from __future__ import annotations

import csv
import hashlib
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from facegnet.atomic import atomic_path
from facegnet.errors import DataError
from facegnet.io import IMAGE_SUFFIXES
from facegnet.preprocess import normalise
from facegnet.train.config import TrainConfig

CROP_SIZE = 112


@dataclass
class FaceSet:
    """Face crops in memory.

    ``images`` is (N, 112, 112, 3) uint8 RGB; ``labels`` holds a class index per face, or -1 for faces that
    carry no usable identity (unlabelled, or an identity with too few faces for a margin loss);
    ``teacher`` is an optional (N, D) float32 array of teacher embeddings (NaN rows where none exists).
    """

    images: np.ndarray
    labels: np.ndarray
    paths: list[str]
    identities: list[str] = field(default_factory=list)  # class index -> identity name
    teacher: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def num_classes(self) -> int:
        return len(self.identities)

    def subset(self, index: np.ndarray) -> FaceSet:
        """The faces at ``index`` (labels kept as they are)."""
        index = np.asarray(index)
        return FaceSet(
            images=self.images[index],
            labels=self.labels[index],
            paths=[self.paths[i] for i in index],
            identities=list(self.identities),
            teacher=None if self.teacher is None else self.teacher[index],
        )


def _decode(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as image:
            image = image.convert("RGB")
            if image.size != (CROP_SIZE, CROP_SIZE):
                image = image.resize((CROP_SIZE, CROP_SIZE), Image.BILINEAR)
            return np.asarray(image, dtype=np.uint8)
    except (OSError, ValueError) as exc:
        raise DataError(f"unreadable face crop ({exc.__class__.__name__})", path) from None


def decode_crops(paths: list[Path], cache: str | Path | None = None, threads: int = 2) -> np.ndarray:
    """Decode crops into one (N, 112, 112, 3) uint8 array, reading/writing ``cache`` (.npy) when given.

    The cache is keyed by a hash of the path list, so a different selection never reads a stale file.
    """
    key = hashlib.sha1("\n".join(str(p) for p in paths).encode()).hexdigest()[:12]
    cache_file = None
    if cache is not None:
        cache = Path(cache)
        cache_file = cache.with_name(f"{cache.stem}-{key}.npy") if cache.suffix == ".npy" else cache / f"crops-{key}.npy"
        if cache_file.exists():
            images = np.load(cache_file, mmap_mode=None)
            if images.shape == (len(paths), CROP_SIZE, CROP_SIZE, 3):
                return images
    images = np.empty((len(paths), CROP_SIZE, CROP_SIZE, 3), dtype=np.uint8)

    def work(i: int) -> None:
        images[i] = _decode(paths[i])

    with ThreadPoolExecutor(max(1, threads)) as pool:  # Pillow releases the GIL while decoding
        list(pool.map(work, range(len(paths))))
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(cache_file, 0o644) as tmp, open(tmp, "wb") as handle:
            np.save(handle, images)
    return images


def read_manifest(root: str | Path) -> list[dict[str, str]]:
    """Rows of the pack's ``manifest.csv`` (in the teacher array's row order)."""
    path = Path(root) / "manifest.csv"
    try:
        with open(path, newline="") as handle:
            rows = list(csv.DictReader(handle))
    except FileNotFoundError:
        raise DataError("training pack manifest not found", path) from None
    if not rows or not {"crop", "identity", "split"} <= set(rows[0]):
        raise DataError("not a training pack manifest (needs crop, identity, split columns)", path)
    return rows


def load_pack(
    root: str | Path,
    split: str = "train",
    min_faces: int = 2,
    teacher: str | None = "teacher_dlib.npy",
    cache: str | Path | None = None,
    limit: int | None = None,
) -> FaceSet:
    """Load one split of the shared training pack.

    Identities with fewer than ``min_faces`` faces in the split get label -1 (still used for distillation).
    ``limit`` keeps the first N faces (for tests).
    """
    root = Path(root)
    rows = read_manifest(root)
    index = [i for i, row in enumerate(rows) if row["split"] == split]
    if limit is not None:
        index = index[:limit]
    if not index:
        raise DataError(f"no faces in split {split!r}", root / "manifest.csv")
    ids = [rows[i]["identity"] for i in index]
    counts = Counter(ids)
    identities = sorted({i for i in ids if counts[i] >= min_faces}, key=lambda s: (len(s), s))
    class_of = {name: c for c, name in enumerate(identities)}
    labels = np.array([class_of.get(i, -1) for i in ids], dtype=np.int64)
    paths = [rows[i]["crop"] for i in index]
    images = decode_crops([root / p for p in paths], cache=cache)
    teacher_array = None
    if teacher:
        path = root / teacher
        try:
            teacher_array = np.load(path).astype(np.float32)
        except FileNotFoundError:
            raise DataError("teacher embeddings not found", path) from None
        if len(teacher_array) != len(rows):
            raise DataError(f"teacher has {len(teacher_array)} rows, manifest {len(rows)}", path)
        teacher_array = teacher_array[index]
    return FaceSet(images=images, labels=labels, paths=paths, identities=identities, teacher=teacher_array)


def pack_teacher_mean(root: str | Path, teacher: str = "teacher_dlib.npy") -> np.ndarray:
    """Mean teacher embedding over the whole pack (dlib descriptors share a large common component)."""
    return np.load(Path(root) / teacher).astype(np.float64).mean(axis=0).astype(np.float32)


def is_pack(root: str | Path) -> bool:
    """True for a training pack (its manifest has identity and split columns); ``facegnet prepare`` output
    has a manifest too, with person columns instead."""
    path = Path(root) / "manifest.csv"
    if not path.exists():
        return False
    with open(path, newline="") as handle:
        header = next(csv.reader(handle), [])
    return {"crop", "identity", "split"} <= set(header)


def load_prepared(root: str | Path, min_faces: int = 2, cache: str | Path | None = None,
                  limit: int | None = None) -> FaceSet:
    """Load the crops ``facegnet prepare`` wrote (``manifest.csv``: crop, person, …).

    Faces of a person with at least ``min_faces`` crops get a class; loose photos (person "") and rarer people
    get -1: they still teach through distillation. Without a manifest the folder layout is read instead
    (:func:`load_folder`).
    """
    root = Path(root)
    path = root / "manifest.csv"
    if not path.exists():
        faces = load_folder(root, min_faces, cache=cache)
        return faces if not limit else faces.subset(np.arange(min(limit, len(faces))))
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if rows and not {"crop", "person"} <= set(rows[0]):
        raise DataError("not a prepare manifest (needs crop and person columns)", path)
    rows = [r for r in rows if r.get("crop")]
    if limit:
        rows = rows[:limit]
    if not rows:
        raise DataError("no face crops listed in the manifest", path)
    names = [r["person"] for r in rows]
    counts = Counter(n for n in names if n)
    identities = sorted(n for n, c in counts.items() if c >= min_faces)
    class_of = {name: c for c, name in enumerate(identities)}
    labels = np.array([class_of.get(n, -1) for n in names], dtype=np.int64)
    paths = [r["crop"] for r in rows]
    images = decode_crops([root / p for p in paths], cache=cache)
    return FaceSet(images=images, labels=labels, paths=paths, identities=identities)


def concat(sets: list[FaceSet], names: list[str] | None = None) -> FaceSet:
    """One FaceSet of several: classes renumbered after each other (prefixed with the set's name, so two
    sources' "7" stay apart), teacher rows NaN where a set has none."""
    if len(sets) == 1:
        return sets[0]
    names = names or [str(i) for i in range(len(sets))]
    dims = {s.teacher.shape[1] for s in sets if s.teacher is not None}
    if len(dims) > 1:
        raise DataError(f"the sources' stored teachers differ in size ({sorted(dims)})")
    dim = dims.pop() if dims else None
    labels, identities, teachers, paths = [], [], [], []
    for name, s in zip(names, sets):
        labels.append(np.where(s.labels >= 0, s.labels + len(identities), -1))
        identities += [f"{name}/{i}" for i in s.identities]
        paths += [f"{name}/{p}" for p in s.paths]
        if dim is not None:
            teachers.append(s.teacher if s.teacher is not None else np.full((len(s), dim), np.nan, np.float32))
    return FaceSet(images=np.concatenate([s.images for s in sets]), labels=np.concatenate(labels), paths=paths,
                   identities=identities, teacher=np.concatenate(teachers) if dim is not None else None)


def load_folder(root: str | Path, min_faces: int = 2, cache: str | Path | None = None) -> FaceSet:
    """Load a folder of crops: one sub-folder per person, or loose images (unlabelled, label -1)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError("not a folder", root)
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise DataError("no face crops found (expected .jpg/.png/.webp files)", root)
    names = [p.parent.name if p.parent != root else "" for p in files]
    counts = Counter(n for n in names if n)
    identities = sorted(n for n, c in counts.items() if c >= min_faces)
    class_of = {name: c for c, name in enumerate(identities)}
    labels = np.array([class_of.get(n, -1) for n in names], dtype=np.int64)
    images = decode_crops(files, cache=cache)
    return FaceSet(images=images, labels=labels, paths=[str(p.relative_to(root)) for p in files], identities=identities)


def read_pairs(path: str | Path) -> list[tuple[str, str, int]]:
    """Rows ``(a, b, same)`` of a pairs CSV such as the pack's ``dev_pairs.csv``."""
    path = Path(path)
    try:
        with open(path, newline="") as handle:
            reader = csv.DictReader(handle)
            return [(r["a"], r["b"], int(r["same"])) for r in reader]
    except FileNotFoundError:
        raise DataError("pairs file not found", path) from None
    except (KeyError, ValueError):
        raise DataError("malformed pairs file (needs a,b,same columns)", path) from None


def to_input(batch: torch.Tensor) -> torch.Tensor:
    """uint8 (N, H, W, 3) → float (N, 3, H, W) with the cards' normalisation (:mod:`facegnet.preprocess`)."""
    return normalise(batch)


# ----------------------------------------------------------------------------------------------- what a run reads
def uses_stored_teacher(cfg: TrainConfig) -> bool:
    """Whether the run distils to stored descriptors (the pack's ``teacher_dlib.npy``)."""
    return cfg.distill != "none" and bool(cfg.teacher) and cfg.teacher.lower() != "none" and is_pack(cfg.data)


def training_faces(cfg: TrainConfig) -> FaceSet:
    """The training faces named by ``cfg.data`` (a pack, or ``facegnet prepare`` output / a folder of crops)
    plus every folder of ``cfg.extra_data``."""
    root = Path(cfg.data)
    if is_pack(root):
        teacher = cfg.teacher if uses_stored_teacher(cfg) else None
        faces = load_pack(root, "train", cfg.min_faces, teacher=teacher, cache=cfg.cache, limit=cfg.limit)
    else:
        if cfg.distill != "none" and not cfg.teacher_model:
            raise DataError("distillation needs a teacher: this folder has no stored teacher embeddings "
                            "(give --teacher-model, or --distill none)", root)
        faces = load_prepared(root, cfg.min_faces, cache=cfg.cache, limit=cfg.limit)
    sets, names = [faces], [root.name or "data"]
    for extra in [e.strip() for e in (cfg.extra_data or "").split(",") if e.strip()]:
        if not cfg.teacher_model and cfg.head == "none":
            raise DataError("extra faces teach only through an online teacher or their names (--teacher-model)", extra)
        sets.append(load_prepared(extra, cfg.min_faces, cache=cfg.cache, limit=cfg.limit))
        names.append(Path(extra).name)
    return concat(sets, names)


def dev_pairs_path(cfg: TrainConfig) -> Path | None:
    """The dev pairs file a run evaluates on (None: no dev evaluation, or the default file does not exist)."""
    if cfg.dev_pairs == "none":
        return None
    path = Path(cfg.dev_pairs) if cfg.dev_pairs else Path(cfg.data) / "dev_pairs.csv"
    if cfg.dev_pairs and not path.exists():
        raise DataError("dev pairs file not found", path)
    return path if path.exists() else None


def load_dev(cfg: TrainConfig, pairs_path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Dev crops (uint8) and the pairs as indices into them: ``(images, a, b, same)``."""
    pairs = read_pairs(pairs_path)
    names = sorted({p for a, b, _ in pairs for p in (a, b)})
    where = {n: i for i, n in enumerate(names)}
    root = pairs_path.parent
    images = decode_crops([root / n for n in names], cache=cfg.cache)
    a = np.array([where[p[0]] for p in pairs])
    b = np.array([where[p[1]] for p in pairs])
    same = np.array([p[2] for p in pairs], dtype=bool)
    return images, a, b, same
