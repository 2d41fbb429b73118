"""``synthetic_parts``: the embedded benchmark, rendered on demand with exact ground truth.

Nothing is stored on disk (``root`` is ignored): image ``i`` of a split is a pure function
of (seed, split, i, image_size), so runs are reproducible without downloads and a split
of any size costs no storage. Splits draw from disjoint random streams via a fixed split
code, so the test images are never the training images.
"""
from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import Any

import numpy as np

from segbench.datasets.base import Dataset, FitImages, Split, SplitInfo
from segbench.datasets.synthetic_render import LANDMARK_NAMES, PART_NAMES, render, render_image

__all__ = ["SyntheticParts", "SyntheticPartsSplit", "measure_throughput", "SPLIT_CODES",
           "PART_NAMES", "LANDMARK_NAMES"]

# Fixed forever: changing a code silently changes every image of that split.
SPLIT_CODES = {"train": 0, "regression_fit": 1, "test": 2}


class SyntheticPartsSplit(Split):
    """One split; every access re-renders (cheap), so no state is kept between indices."""

    def __init__(self, name: str, length: int, seed: int, image_size: int) -> None:
        super().__init__(name, length)
        self.seed = seed
        self.image_size = image_size
        self._code = SPLIT_CODES[name]

    def item(self, index: int) -> dict[str, Any]:
        # Image and ground truth come out of one render, so the pair is always consistent.
        index = int(index)
        if not 0 <= index < len(self):
            raise IndexError(f"{self.name} index {index} out of range [0, {len(self)})")
        return render(self.seed, self._code, index, self.image_size)

    def image(self, index: int) -> np.ndarray:
        return self.item(index)["image"]

    def annotation(self, index: int) -> dict[str, Any]:
        out = self.item(index)
        del out["image"]
        return out

    def fit_images(self) -> FitImages:
        # The render parameters and the image-only renderer: nothing that could render labels.
        return FitImages(len(self), functools.partial(render_image, seed=self.seed, split_code=self._code,
                                                      size=self.image_size))


class SyntheticParts(Dataset):
    """Articulated 6-part figures on cluttered backgrounds (see ``datasets.synthetic_render``).

    Options: ``seed`` (default 0), ``n_train``, ``n_regression_fit``, ``n_test`` (split sizes).
    """

    SPLITS = {
        "train": SplitInfo("train", 2000, "images for unsupervised fitting"),
        "regression_fit": SplitInfo("regression_fit", 500,
                                    "labelled images for fitting part->label / landmark regressors"),
        "test": SplitInfo("test", 300, "held-out evaluation images"),
    }
    part_names = PART_NAMES
    landmark_names = LANDMARK_NAMES

    def __init__(self, root: Path | None = None, image_size: int = 128, *, seed: int = 0,
                 n_train: int = 2000, n_regression_fit: int = 500, n_test: int = 300,
                 **options: Any) -> None:
        from segbench.benchmark.errors import UserError

        if unknown := set(options):
            raise UserError(f"SyntheticParts: unknown option(s) {', '.join(sorted(unknown))}; "
                            "known: seed, n_train, n_regression_fit, n_test")
        if int(image_size) < 16:
            raise UserError(f"SyntheticParts: image_size must be >= 16, got {image_size}")
        sizes = {"train": int(n_train), "regression_fit": int(n_regression_fit), "test": int(n_test)}
        if any(n < 0 for n in sizes.values()) or int(seed) < 0:
            raise UserError("SyntheticParts: seed and split sizes must be non-negative")
        # Record the options so ``describe()`` (the run's provenance) states how images were made.
        super().__init__(root, int(image_size), seed=int(seed), n_train=sizes["train"],
                         n_regression_fit=sizes["regression_fit"], n_test=sizes["test"])
        self.seed = int(seed)
        self._sizes = sizes

    def _split(self, name: str) -> SyntheticPartsSplit:
        return SyntheticPartsSplit(name, self._sizes[name], self.seed, self.image_size)


def measure_throughput(resolution: int, n: int = 500, seed: int = 0) -> float:
    """Images per second rendering image + all ground truth on the calling thread."""
    render(seed, SPLIT_CODES["train"], 0, resolution)  # warm caches outside the timing
    start = time.perf_counter()
    for i in range(n):
        render(seed, SPLIT_CODES["train"], i, resolution)
    return n / max(time.perf_counter() - start, 1e-9)
