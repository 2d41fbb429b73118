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
from typing import Any, Callable, ClassVar, Iterator, Mapping, Sequence

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

    It holds only a length and an image loader, a pure function of the index that reaches no
    split, dataset or annotation (file paths plus a module-level decoder, cached pixels, or the
    render parameters of a synthetic image), so a method cannot reach labels through it.
    """

    def __init__(self, length: int, load_image: Callable[[int], np.ndarray]) -> None:
        if _holds_split_or_dataset(load_image):
            raise TypeError("a fit view's image loader must not hold a Split or Dataset (a bound method or a "
                            "closure over one would expose its annotations to the method)")
        self._length = length
        self._load_image = load_image

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, index: int) -> torch.Tensor:
        if not 0 <= index < self._length:
            raise IndexError(index)
        return to_tensor(self._load_image(index))


def _holds_split_or_dataset(loader: Any) -> bool:
    """Whether ``loader`` holds a Split or Dataset, or a bound method of one, directly: as
    ``__self__``, in a closure cell, as a ``functools.partial`` argument or as an attribute. A
    cheap guard at construction; tests/test_fit_images_hold_no_labels.py walks the whole graph."""
    held = [loader, getattr(loader, "__self__", None), getattr(loader, "func", None)]
    for cell in getattr(loader, "__closure__", None) or ():
        try:
            held.append(cell.cell_contents)
        except ValueError:  # an empty cell
            pass
    held += list(getattr(loader, "args", ())) + list(getattr(loader, "keywords", {}).values())
    held += list(getattr(loader, "__dict__", {}).values())
    labelled = (Split, Dataset)
    return any(isinstance(x, labelled) or isinstance(getattr(x, "__self__", None), labelled) for x in held)


class Split(ABC):
    """One split of a dataset: ``len``, ``image(i)`` (uint8 HWC), ``annotation(i)``, a stable
    ``image_id(i)`` (per-image score files key on it) and the images-only ``fit_images()``."""

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

    @abstractmethod
    def fit_images(self) -> FitImages:
        """The images-only view a method fits on. Its loader must not reach this split (no bound
        method of it, no closure over it): build it from paths, pixels or render parameters."""

    def image_id(self, index: int) -> str:
        """A stable id of item ``index``, unique within the split (per-image scores of two runs
        are paired on it): the index here; file-backed splits return the file's key, which stays
        the same if a list file is reordered."""
        return str(index)

    def item(self, index: int) -> dict[str, Any]:
        """Image and annotation together (datasets that render both at once override this)."""
        return {"image": self.image(index), **self.annotation(index)}

    def batch(self, indices: Sequence[int]) -> dict[str, Any]:
        """Items ``indices``: ``images`` float32 [B,3,H,W], the stacked annotations and ``index``."""
        items = [self.item(i) for i in indices]
        batch: dict[str, Any] = {"images": torch.stack([to_tensor(it.pop("image")) for it in items])}
        for key in items[0]:
            batch[key] = np.stack([np.asarray(it[key]) for it in items])
        batch["index"] = np.asarray(indices, dtype=np.int64)
        return batch

    def batches(self, batch_size: int) -> Iterator[dict[str, Any]]:
        """Batches in index order (``batch`` of consecutive ranges)."""
        for start in range(0, len(self), batch_size):
            yield self.batch(range(start, min(start + batch_size, len(self))))


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
