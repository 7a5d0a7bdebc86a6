"""Batch augmentation on the training device: per-face transforms (:class:`Augment`) and mixing faces of a
batch with each other (:func:`mix_batch`, for an online teacher, which embeds the mixed face).

Every random draw comes from a CPU ``torch.Generator``, so a run's views are the same on any device and a resumed
run (the generator's state is in the checkpoint) draws exactly what an uninterrupted one would.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F


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
    #: which rows of the last batch were mirrored (bool, on the CPU): stored per-view targets follow the flip
    flipped: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.bool), init=False, repr=False)

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        n = x.shape[0]

        def draw(p: float) -> torch.Tensor:
            return torch.rand(n, generator=generator) < p

        self.flipped = torch.zeros(n, dtype=torch.bool)
        if self.flip > 0:
            mask = draw(self.flip)
            x[mask] = x[mask].flip(-1)
            self.flipped = mask
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
