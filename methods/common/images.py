"""Image conversions and the in-memory training-image store shared by every GAN loop.

GANs work in [-1, 1]; datasets hand out [0, 1]; stores and samples are uint8. Each
conversion is written once here.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from segbench.benchmark.errors import UserError


def signed_to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] floats (a generator's output) -> uint8 0..255 (clamped, rounded), on the CPU."""
    return ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def unit_to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[0, 1] floats -> uint8 0..255 (clamped, rounded)."""
    return (images.clamp(0, 1) * 255).round().to(torch.uint8)


def uint8_to_signed(images: torch.Tensor) -> torch.Tensor:
    """uint8 0..255 -> float [-1, 1] (a GAN's input range)."""
    return images.float() / 127.5 - 1


def resize_square(image: torch.Tensor, size: int) -> torch.Tensor:
    """[3, H, W] (or [B, 3, H, W]) -> ``size`` x ``size`` with antialiased bilinear resampling."""
    if image.shape[-2:] == (size, size):
        return image
    batched = image.dim() == 4
    out = F.interpolate(image if batched else image[None], size=(size, size), mode="bilinear",
                        align_corners=False, antialias=True)
    return out if batched else out[0]


class ImageStore:
    """The fit images at ``size`` x ``size`` as uint8, loaded once.

    With ``max_mb`` the images are kept in memory only when they fit in that many MiB, and
    otherwise read from ``dataset`` on every access. A fit dataset with per-read augmentation
    (``base_image`` / ``augment`` / ``base_length``, e.g. CUB and Flowers' random resized crops)
    is stored un-augmented; ``augment`` is applied by the caller on every read, so each batch
    sees fresh crops (caching augmented items would freeze one crop per item for the run).
    """

    def __init__(self, dataset: Any, size: int, max_mb: int | None = None, what: str = "training") -> None:
        self.dataset, self.size = dataset, size
        self.n = len(dataset)
        if self.n == 0:
            raise UserError(f"{what} needs at least one fit image")
        self.augment = getattr(dataset, "augment", None)
        self.n_base = int(getattr(dataset, "base_length", self.n)) if self.augment else self.n
        self.cache: torch.Tensor | None = None
        if max_mb is None or self.n_base * 3 * size * size <= max_mb * 2**20:
            self.cache = torch.empty(self.n_base, 3, size, size, dtype=torch.uint8)
            for i in range(self.n_base):
                self.cache[i] = self._load(i)

    def _load(self, index: int) -> torch.Tensor:
        """uint8 [3, S, S] of item ``index`` (of its un-augmented image with augmentation)."""
        x = self.dataset.base_image(index % self.n_base) if self.augment else self.dataset[index]
        return unit_to_uint8(resize_square(x, self.size))

    def __len__(self) -> int:
        return self.n

    def uint8(self, indices: torch.Tensor) -> torch.Tensor:
        """uint8 [len(indices), 3, S, S] (un-augmented)."""
        if self.cache is not None:
            return self.cache[indices % self.n_base]
        return torch.stack([self._load(int(i)) for i in indices])

    def signed(self, indices: torch.Tensor) -> torch.Tensor:
        """Float [-1, 1] images of ``indices``, augmented afresh when the dataset augments
        (the augmentation draws from torch's global RNG, which training snapshots keep)."""
        images = self.uint8(indices)
        if self.augment is not None:
            return torch.stack([self.augment(im.float() / 255) for im in images]) * 2 - 1
        return uint8_to_signed(images)


class EpochOrder:
    """Indices of ``n`` images in epochs of random permutations drawn from ``rng``; the rest of
    the current epoch is loop state (``get_extra`` / ``set_extra`` of the snapshot)."""

    def __init__(self, n: int, rng: torch.Generator) -> None:
        self.n, self.rng = n, rng
        self.rest = torch.zeros(0, dtype=torch.int64)

    def take(self, size: int) -> torch.Tensor:
        while self.rest.numel() < size:
            self.rest = torch.cat([self.rest, torch.randperm(self.n, generator=self.rng)])
        idx, self.rest = self.rest[:size], self.rest[size:]
        return idx

    def get_extra(self) -> dict[str, torch.Tensor]:
        return {"data_buffer": self.rest}

    def set_extra(self, extra: dict[str, Any]) -> None:
        self.rest = extra["data_buffer"]
