"""Which faces make each batch. :class:`EpochSampler` draws random batches and derives every batch from
``(seed, step)``, so a resumed run draws exactly the batches an uninterrupted one would, whatever the number of
processes. (Batches of look-alike identities lost to random ones: docs/training.md, "What did not help".)
"""
from __future__ import annotations

import numpy as np

from facegnet.errors import DataError


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
