"""Image/label pairs streamed from a frozen generator: the training data of a segmenter.

Generative segmentation methods (GANSeg, the latent-direction segmenter) train a supervised
segmenter on pairs they synthesise. The pairs are drawn fresh for every batch, never stored as
a big array, and all randomness comes from the ``torch.Generator`` passed in (plus the global
torch RNG, which ``train_segmenter`` keeps in its snapshots), so a training run is
reproducible from its seed and resumable bit-identically.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol, runtime_checkable

import torch

PairFn = Callable[[int, torch.Generator], "tuple[torch.Tensor, torch.Tensor]"]


@runtime_checkable
class PairSource(Protocol):
    """Anything with ``num_classes`` and ``pairs(batch_size, generator)``.

    ``num_classes`` is K+1 (class 0 = background). ``pairs`` returns images float32
    ``[B,3,H,W]`` in [0,1] and labels int64 ``[B,H,W]`` in ``[0, num_classes)``, drawn fresh on
    every call (e.g. from a generator in eval mode under ``torch.no_grad``), deterministic
    given the generator's state. A source whose ``keep_surplus`` attribute is true may return
    more than ``batch_size`` pairs (the latent-direction code keeps every passing sample of its
    last draw round, so its batches hold >= batch_size). Draw every random number from ``generator`` (a CPU generator:
    sample on CPU, then move to the model's device), not from numpy or ``random``. In a
    data-parallel run every rank draws the same global batch from its copy of the generator and
    trains on its slice (``train_segmenter``), so there a batch must depend only on the generator's
    state and on weights that are the same on every rank (not on the global torch RNG, which is
    seeded per rank).
    """

    num_classes: int

    def pairs(self, batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        ...


@dataclass(frozen=True)
class FunctionPairSource:
    """Adapter: a plain function ``fn(batch_size, generator) -> (images, labels)`` as a PairSource."""

    num_classes: int
    fn: PairFn

    def pairs(self, batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        return self.fn(batch_size, generator)


def check_pairs(images: torch.Tensor, labels: torch.Tensor, num_classes: int,
                batch_size: int | None = None, at_least: bool = False, values: bool = True) -> None:
    """Raise ValueError (a bug in the pair source, not a user mistake) if a batch breaks the contract.
    ``values=False`` checks shapes and dtypes only: the value ranges need the tensors' contents, a
    host sync on a GPU, so the training loop checks them on its sync steps only."""
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"pair images must be a [B,3,H,W] tensor, got {tuple(getattr(images, 'shape', ()))}")
    if images.dtype != torch.float32:
        raise ValueError(f"pair images must be float32, got {images.dtype}")
    if not isinstance(labels, torch.Tensor) or labels.dtype != torch.int64:
        raise ValueError(f"pair labels must be an int64 tensor, got {getattr(labels, 'dtype', type(labels))}")
    b, _, h, w = images.shape
    if tuple(labels.shape) != (b, h, w):
        raise ValueError(f"pair labels shape {tuple(labels.shape)} does not match images {tuple(images.shape)}"
                         " (need [B,H,W])")
    if batch_size is not None and (b < batch_size if at_least else b != batch_size):
        wanted = f"at least {batch_size}" if at_least else str(batch_size)
        raise ValueError(f"pair source returned a batch of {b}, asked for {wanted}")
    if not values:
        return
    lo, hi = torch.aminmax(images)
    if not (lo >= 0 and hi <= 1):  # also catches NaN
        raise ValueError(f"pair images must lie in [0,1], got [{lo.item():.3g}, {hi.item():.3g}]")
    lo, hi = torch.aminmax(labels)
    if lo < 0 or hi >= num_classes:
        raise ValueError(f"pair labels must lie in [0, {num_classes}), got [{lo.item()}, {hi.item()}]")
