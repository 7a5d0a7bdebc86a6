"""Which faces make each batch. :class:`EpochSampler` draws random batches; with ``lookalike_neighbours`` the run
uses :class:`facegnet.train.lookalike.LookalikeSampler` instead, whose batches gather identities that look alike.
Both derive every batch from ``(seed, step)``, so a resumed run draws exactly the batches an uninterrupted one would,
whatever the number of processes.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from facegnet.errors import DataError
from facegnet.train.config import TrainConfig
from facegnet.train.datasets import FaceSet, is_pack, to_input


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


def make_sampler(cfg: TrainConfig, faces: FaceSet, rank: int = 0, world: int = 1,
                 teacher: Callable[[torch.Tensor], torch.Tensor] | None = None):
    """The sampler a run's configuration asks for: random batches, or look-alike batches
    (``cfg.lookalike_neighbours``; :class:`facegnet.train.lookalike.LookalikeSampler`) whose identities are near
    each other by :func:`lookalike_embeddings`. Both have ``batch(step)`` and ``steps_per_epoch``."""
    if not cfg.lookalike_neighbours:
        return EpochSampler(len(faces), cfg.batch_size, cfg.seed, rank, world)
    from facegnet.train.lookalike import LookalikeSampler

    return LookalikeSampler.from_embeddings(faces.labels, lookalike_embeddings(cfg, faces, teacher), cfg.batch_size,
                                            seed=cfg.seed, k=cfg.lookalike_neighbours, rank=rank, world=world)


def lookalike_embeddings(cfg: TrainConfig, faces: FaceSet,
                         teacher: Callable[[torch.Tensor], torch.Tensor] | None = None) -> np.ndarray:
    """What tells which identities look alike: the pack's stored teacher descriptors (also when the run does not
    distil to them; fixed, so a resumed run finds the same neighbours), else the online ``teacher``'s embeddings of
    the clean crops. Faces of other sources get NaN rows beside a pack's (no neighbours)."""
    from facegnet.train.lookalike import stored_teacher

    root = Path(cfg.data)
    stored = cfg.teacher if cfg.teacher.lower() != "none" else "teacher_dlib.npy"
    if is_pack(root) and (root / stored).exists():
        prefix = f"{root.name or 'data'}/"  # concat() names each source's crops after it when there are several
        paths = [p[len(prefix):] if cfg.extra_data and p.startswith(prefix) else p for p in faces.paths]
        return stored_teacher(root, paths, stored)
    if teacher is None:
        raise DataError("look-alike batches need a teacher: the pack's stored descriptors or --teacher-model",
                        cfg.data)
    return torch.cat([teacher(to_input(torch.from_numpy(faces.images[i:i + 256]))).float().cpu()
                      for i in range(0, len(faces), 256)]).numpy()
