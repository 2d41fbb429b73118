"""Splits backed by a list of image files: decode, convert to RGB, resize the whole image to
the protocol's size (aspect not kept, as GANSeg's preprocessing does), plus a per-image
annotation function. Used by the real-image datasets."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from PIL import Image

from segbench.benchmark.errors import DataNotFoundError
from segbench.datasets.base import Split
from segbench.datasets.list_files import DataFormatError

Annotate = Callable[[int], dict[str, Any]]  # index -> annotation at the split's image_size


def decode_rgb(path: Path) -> np.ndarray:
    """uint8 [H, W, 3] as stored; a missing or undecodable file fails naming it."""
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"missing image {path}")
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except (OSError, ValueError, SyntaxError) as exc:
        raise DataFormatError(f"corrupt image {path}: {exc}") from None


def resize_rgb(image: np.ndarray, size: int) -> np.ndarray:
    """Whole image to size x size with PIL bilinear (antialiased when shrinking)."""
    if image.shape[:2] == (size, size):
        return image
    return np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR))


class ImageFileSplit(Split):
    """``image(i)``: file ``i`` resized to ``image_size``; ``full_image(i)``: as stored (for
    protocol variants that crop the original, e.g. the redo/melas IoU views)."""

    def __init__(self, name: str, paths: Sequence[Path], image_size: int, annotate: Annotate | None = None,
                 root: Path | None = None) -> None:
        super().__init__(name, len(paths))
        self.paths = list(paths)
        self.image_size = image_size
        self._annotate = annotate
        self._root = root

    def full_image(self, index: int) -> np.ndarray:
        return decode_rgb(self.paths[index])

    def image(self, index: int) -> np.ndarray:
        return resize_rgb(self.full_image(index), self.image_size)

    def annotation(self, index: int) -> dict[str, Any]:
        return self._annotate(index) if self._annotate else {}

    def content_fingerprint(self) -> str:
        """Cheap content key (names relative to the root, sizes, mtimes) for derived-file caches."""
        from segbench.protocols.metrics.fid import content_hash
        return content_hash(self.paths[:len(self)], root=self._root)
