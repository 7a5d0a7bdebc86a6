"""Training data: face crops held in memory as uint8, with labels and optional teacher embeddings.

Two sources give the same :class:`FaceSet`:

- the shared training pack (``manifest.csv``, ``crops/``, ``teacher_dlib.npy``; see its README), read by
  :func:`load_pack`;
- a folder of 112×112 crops, one sub-folder per person (or a flat folder of unlabelled faces), read by
  :func:`load_folder` (``facegnet prepare`` writes such folders).

Crops are decoded once and kept as one uint8 array (20k crops are ~770 MB); decoding is the slow part, so the
array can be cached to an ``.npy`` file. Augmentation runs on whole batches in the training loop
(:class:`Augment`), and :class:`EpochSampler` yields the batches of each epoch from a seeded permutation, so a
resumed run draws exactly the batches an uninterrupted one would.
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
import torch.nn.functional as F
from PIL import Image

from facegnet.atomic import atomic_path
from facegnet.errors import DataError
from facegnet.io import IMAGE_SUFFIXES
from facegnet.preprocess import normalise

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

    def subset(self, index: np.ndarray) -> "FaceSet":
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


def mix_batch(x: torch.Tensor, mixup: float, cutmix: float, generator: torch.Generator) -> torch.Tensor:
    """Mix faces of a batch with each other (only for an online teacher, which embeds the mixed image).

    Returns a bool mask of the rows that were mixed: their identity labels and stored teacher vectors no longer
    hold. ``mixup``: that fraction of rows becomes λ·a + (1−λ)·b with λ uniform in 0.5–0.8 (the row's own
    face dominates); ``cutmix``: that fraction gets a rectangle (20–45% of the area) pasted from another face.
    ``x`` is changed in place.
    """
    n = x.shape[0]
    mixed = torch.zeros(n, dtype=torch.bool)
    if n < 2:
        return mixed
    partner = (torch.arange(n) + torch.randint(1, n, (n,), generator=generator)) % n  # never the row itself
    source = x.clone()
    if mixup > 0:
        rows = torch.rand(n, generator=generator) < mixup
        if rows.any():
            lam = _uniform(int(rows.sum()), 0.5, 0.8, generator).to(x).view(-1, 1, 1, 1)
            x[rows] = lam * source[rows] + (1 - lam) * source[partner[rows]]
            mixed |= rows
    if cutmix > 0:
        rows = (torch.rand(n, generator=generator) < cutmix) & ~mixed
        if rows.any():
            h, w = x.shape[-2:]
            for i in torch.nonzero(rows).flatten().tolist():
                area = float(_uniform(1, 0.2, 0.45, generator)) * h * w
                aspect = float(torch.exp(_uniform(1, -0.5, 0.5, generator)))
                eh, ew = min(h, int((area * aspect) ** 0.5)), min(w, int((area / aspect) ** 0.5))
                top = int(torch.randint(0, h - eh + 1, (1,), generator=generator))
                left = int(torch.randint(0, w - ew + 1, (1,), generator=generator))
                x[i, :, top : top + eh, left : left + ew] = source[partner[i], :, top : top + eh, left : left + ew]
            mixed |= rows
    return mixed


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


@dataclass
class Augment:
    """Batch augmentation on normalised (N, 3, H, W) tensors, on whatever device they live (a GPU run augments
    there). Every draw comes from ``generator`` on the CPU, so a run's views are the same on any device."""

    flip: float = 0.5
    colour: float = 0.0  # probability of a brightness/contrast/saturation jitter
    grayscale: float = 0.0
    blur: float = 0.0
    lowres: float = 0.0  # probability of down-up sampling to 1/4–1/2 resolution
    strength: float = 0.3  # colour-jitter amplitude
    jitter: float = 0.0  # probability of a small random similarity warp (landmark noise of a real detector)
    erase: float = 0.0  # probability of blanking a random rectangle (occlusion: hands, glasses, masks)

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        n = x.shape[0]

        def draw(p: float) -> torch.Tensor:
            return torch.rand(n, generator=generator) < p

        if self.flip > 0:
            mask = draw(self.flip)
            x[mask] = x[mask].flip(-1)
        if self.colour > 0:
            mask = draw(self.colour).view(n, 1, 1, 1).to(x)
            s = self.strength
            bright = (_rand(generator, x, n, 1, 1, 1) * 2 - 1) * s
            contrast = 1 + (_rand(generator, x, n, 1, 1, 1) * 2 - 1) * s
            sat = 1 + (_rand(generator, x, n, 1, 1, 1) * 2 - 1) * s
            gray = x.mean(1, keepdim=True)
            mean = x.mean((1, 2, 3), keepdim=True)
            y = (gray + (x - gray) * sat - mean) * contrast + mean + bright
            x = mask * y.clamp(-1, 1) + (1 - mask) * x
        if self.grayscale > 0:
            mask = draw(self.grayscale)
            if mask.any():
                g = (0.299 * x[mask, 0] + 0.587 * x[mask, 1] + 0.114 * x[mask, 2]).unsqueeze(1)
                x[mask] = g.expand(-1, 3, -1, -1)
        if self.blur > 0:
            mask = draw(self.blur)
            if mask.any():
                sigma = 0.5 + float(torch.rand(1, generator=generator)) * 1.0
                k = torch.arange(-2, 3, dtype=x.dtype, device=x.device)
                k = torch.exp(-(k**2) / (2 * sigma**2))
                k = k / k.sum()
                y = x[mask]
                c = y.shape[1]
                y = F.conv2d(F.pad(y, (2, 2, 0, 0), mode="replicate"), k.view(1, 1, 1, 5).repeat(c, 1, 1, 1), groups=c)
                y = F.conv2d(F.pad(y, (0, 0, 2, 2), mode="replicate"), k.view(1, 1, 5, 1).repeat(c, 1, 1, 1), groups=c)
                x[mask] = y
        if self.lowres > 0:
            mask = draw(self.lowres)
            if mask.any():
                size = x.shape[-1]
                small = int(size * (0.25 + 0.25 * float(torch.rand(1, generator=generator))))
                y = F.interpolate(x[mask], size=(small, small), mode="bilinear", align_corners=False, antialias=True)
                x[mask] = F.interpolate(y, size=(size, size), mode="bilinear", align_corners=False)
        if self.jitter > 0:
            mask = draw(self.jitter)
            if mask.any():
                x[mask] = _random_similarity(x[mask], generator)
        if self.erase > 0:
            mask = draw(self.erase)
            if mask.any():
                x[mask] = _random_erase(x[mask], generator)
        return x


def _rand(generator: torch.Generator, like: torch.Tensor, *shape: int) -> torch.Tensor:
    """Uniform [0, 1) numbers drawn on the CPU generator, moved to ``like``'s device and dtype."""
    return torch.rand(*shape, generator=generator).to(like)


def _uniform(n: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator)


def _random_similarity(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Rotate by ±10°, scale by 0.9–1.1 and shift by ±5% of the side, as MTCNN's landmark error moves a crop."""
    n = x.shape[0]
    angle = _uniform(n, -10.0, 10.0, generator) * (torch.pi / 180)
    scale = _uniform(n, 0.9, 1.1, generator)
    shift = _uniform(2 * n, -0.1, 0.1, generator).view(n, 2)  # grid units span 2, so ±0.1 is ±5% of the side
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta.to(x), list(x.shape), align_corners=False)
    # zeros padding in normalised units is mid-grey; the aligner's border is black (-1), so shift around it
    return F.grid_sample(x + 1, grid, mode="bilinear", padding_mode="zeros", align_corners=False) - 1


def _random_erase(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Blank one rectangle of 5–25% of the crop's area per image with a random grey level."""
    n, _, h, w = x.shape
    area = _uniform(n, 0.05, 0.25, generator) * h * w
    aspect = torch.exp(_uniform(n, -1.0, 1.0, generator))
    eh = (area * aspect).sqrt().clamp(4, h).long()
    ew = (area / aspect).sqrt().clamp(4, w).long()
    top = (torch.rand(n, generator=generator) * (h - eh + 1)).long()
    left = (torch.rand(n, generator=generator) * (w - ew + 1)).long()
    value = _uniform(n, -1.0, 1.0, generator)
    rows = torch.arange(h).view(1, h, 1)
    cols = torch.arange(w).view(1, 1, w)
    inside = (
        (rows >= top.view(n, 1, 1)) & (rows < (top + eh).view(n, 1, 1))
        & (cols >= left.view(n, 1, 1)) & (cols < (left + ew).view(n, 1, 1))
    )
    return torch.where(inside.unsqueeze(1).to(x.device), value.view(n, 1, 1, 1).to(x), x)


class EpochSampler:
    """Batches of indices: a fresh permutation per epoch from ``seed + epoch``, split across DDP ranks.

    Every rank draws the same permutation and takes its own interleaved share, so each step's global batch
    is the same whatever the number of processes (as long as ``batch_size`` is the global size).
    """

    def __init__(self, n: int, batch_size: int, seed: int = 0, rank: int = 0, world: int = 1) -> None:
        if batch_size % world:
            raise DataError(f"batch size {batch_size} is not divisible by {world} processes")
        self.n, self.batch_size, self.seed, self.rank, self.world = n, batch_size, seed, rank, world
        self.steps_per_epoch = max(1, n // batch_size)  # drop the ragged last batch

    def batch(self, step: int) -> np.ndarray:
        """The indices this rank uses at global ``step`` (0-based)."""
        epoch, i = divmod(step, self.steps_per_epoch)
        perm = self._perm(epoch)
        chunk = perm[i * self.batch_size : (i + 1) * self.batch_size]
        return chunk[self.rank :: self.world]

    def _perm(self, epoch: int) -> np.ndarray:
        if getattr(self, "_cached", (None,))[0] != epoch:
            rng = np.random.default_rng(self.seed * 100_003 + epoch)
            self._cached = (epoch, rng.permutation(self.n))
        return self._cached[1]
