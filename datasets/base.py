"""Dataset contract: named splits of images plus annotations, and an images-only fit view.

Annotation keys used by protocols (all numpy, per image, at the dataset's ``image_size``):
``landmarks`` float32 [L, 2] as (x, y) pixel coordinates (x = column, y = row);
``landmark_visible`` bool [L]; ``ref_length`` float (the normaliser of landmark errors);
``fg_mask`` bool [H, W]; ``part_labels`` int64 [H, W] (0 = background).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator, Mapping

import numpy as np
import torch


@dataclass(frozen=True)
class SplitInfo:
    name: str
    expected_size: int
    description: str = ""


def to_tensor(image_hwc_uint8: np.ndarray) -> torch.Tensor:
    """uint8 [H, W, 3] -> float32 [3, H, W] in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(image_hwc_uint8)).permute(2, 0, 1).float().div_(255.0)


class FitImages(torch.utils.data.Dataset):
    """What a method's ``fit`` receives: image tensors and nothing else.

    It holds only a length and an image-loading function, never the annotations, so a
    method cannot reach labels through it.
    """

    def __init__(self, length: int, load_image: Callable[[int], np.ndarray]) -> None:
        self._length = length
        self._load_image = load_image

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, index: int) -> torch.Tensor:
        if not 0 <= index < self._length:
            raise IndexError(index)
        return to_tensor(self._load_image(index))


class Split(ABC):
    """One split of a dataset: ``len``, ``image(i)`` (uint8 HWC) and ``annotation(i)``."""

    def __init__(self, name: str, length: int) -> None:
        self.name = name
        self._length = length

    def __len__(self) -> int:
        return self._length

    @abstractmethod
    def image(self, index: int) -> np.ndarray:
        """uint8 [H, W, 3]."""

    @abstractmethod
    def annotation(self, index: int) -> dict[str, Any]:
        """Ground truth of image ``index`` (keys listed in this module's docstring)."""

    def item(self, index: int) -> dict[str, Any]:
        """Image and annotation together (datasets that render both at once override this)."""
        return {"image": self.image(index), **self.annotation(index)}

    def fit_images(self) -> FitImages:
        return FitImages(len(self), self.image)

    def batches(self, batch_size: int) -> Iterator[dict[str, Any]]:
        """Batches in index order: ``images`` float32 [B,3,H,W] plus stacked annotations."""
        for start in range(0, len(self), batch_size):
            items = [self.item(i) for i in range(start, min(start + batch_size, len(self)))]
            batch: dict[str, Any] = {"images": torch.stack([to_tensor(it.pop("image")) for it in items])}
            for key in items[0]:
                batch[key] = np.stack([np.asarray(it[key]) for it in items])
            batch["index"] = np.arange(start, start + len(items))
            yield batch


class Dataset(ABC):
    """A registered dataset. ``SPLITS`` documents the split names and expected sizes."""

    SPLITS: ClassVar[Mapping[str, SplitInfo]]

    def __init__(self, root: Path | None = None, image_size: int = 128, **options: Any) -> None:
        self.root = Path(root) if root is not None else None
        self.image_size = image_size
        self.options = options

    def split(self, name: str, limit: int | None = None) -> Split:
        if name not in self.SPLITS:
            from segbench.benchmark.errors import UserError
            raise UserError(f"{type(self).__name__} has no split {name!r}; splits: {', '.join(self.SPLITS)}")
        split = self._split(name)
        if limit is not None and limit < len(split):
            split._length = limit
        return split

    @abstractmethod
    def _split(self, name: str) -> Split:
        ...

    def describe(self) -> dict[str, Any]:
        """Provenance for the run record."""
        return {"class": type(self).__name__, "root": str(self.root) if self.root else None,
                "image_size": self.image_size, "options": dict(self.options)}
