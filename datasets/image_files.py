"""Splits backed by a list of image files: decode, convert to RGB, resize the whole image to
the protocol's size (aspect not kept, as GANSeg's preprocessing does), plus a per-image
annotation function. Used by the real-image datasets. ``FileImages`` is the label-free image
loader of their fit views: file paths (and the resized cache's pixels) only."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from PIL import Image

from segbench.benchmark.errors import DataNotFoundError
from segbench.datasets.base import FitImages, Split
from segbench.datasets.list_files import DataFormatError

Annotate = Callable[[int], dict[str, Any]]  # index -> annotation at the split's image_size


SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")  # 16-bit grey (PNG/TIFF); "I" when within 0..65535


def to_8bit(im: Image.Image, path: Path) -> Image.Image:
    """An image PIL can convert to 8-bit RGB / L faithfully: 16-bit grey (``I;16*``, or ``I`` with
    values within 0..65535) scaled to 0..255 (v * 255 / 65535, rounded; PIL's own ``convert``
    clips it, so a 16-bit picture came out all white); the 8-bit modes (L, P, RGB, RGBA, LA, CMYK,
    1, ...) as they are (``convert`` then drops alpha and maps palettes, as the reference code's
    ``convert("RGB")``). Floating-point images (``F``, e.g. a float TIFF) have no agreed value
    range and are refused, naming the file."""
    mode = im.mode
    if mode in SIXTEEN_BIT_MODES or mode.startswith("I;16"):
        values = np.asarray(im).astype(np.int64)
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise DataFormatError(f"{path}: a {mode} image with values {values.min()}..{values.max()}, outside "
                                  "16 bits; save it as an 8-bit (or 16-bit) image")
        return Image.fromarray(((values * 255 + 32767) // 65535).astype(np.uint8), mode="L")
    if mode.startswith("F"):
        raise DataFormatError(f"{path}: a floating-point image (mode {mode}) has no fixed value range; "
                              "save it as an 8-bit (or 16-bit) image")
    return im


def decode_rgb(path: Path) -> np.ndarray:
    """uint8 [H, W, 3]; a missing, undecodable or floating-point file fails naming it. 16-bit
    images are scaled to 8 bits (``to_8bit``); palette, grey, alpha and CMYK images are converted."""
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"missing image {path}")
    try:
        with Image.open(path) as im:
            return np.asarray(to_8bit(im, path).convert("RGB"))
    except (OSError, ValueError, SyntaxError) as exc:
        raise DataFormatError(f"corrupt image {path}: {exc}") from None


def image_hw(image_path: Path) -> tuple[int, int]:
    """(H, W) from the image file's header (a missing or corrupt file fails naming it)."""
    if not Path(image_path).is_file():
        raise DataNotFoundError(f"missing image {image_path}")
    try:
        with Image.open(image_path) as im:
            width, height = im.size
    except (OSError, ValueError, SyntaxError) as exc:
        raise DataFormatError(f"corrupt image {image_path}: {exc}") from None
    return height, width


def check_same_size(mask: np.ndarray | tuple[int, int], image_path: Path, mask_path: Path) -> None:
    """A mask must have its image's size (scored views crop or resize both alike); ``mask`` is the
    decoded mask or its (H, W). The error names both files."""
    mask_hw = tuple(mask[:2]) if isinstance(mask, tuple) else tuple(mask.shape[:2])
    height, width = image_hw(image_path)
    if mask_hw != (height, width):
        raise DataFormatError(f"{mask_path} is {mask_hw[0]}x{mask_hw[1]} (HxW) but its image {image_path} "
                              f"is {height}x{width}")


def resize_rgb(image: np.ndarray, size: int) -> np.ndarray:
    """Whole image to size x size with PIL bilinear (antialiased when shrinking)."""
    if image.shape[:2] == (size, size):
        return image
    return np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR))


@dataclass(frozen=True)
class FileImages:
    """Image ``i`` of a fit view: row ``i`` of the resized cache when there is one, else file
    ``paths[i]`` decoded and resized whole to ``image_size``; a writable uint8 [S, S, 3]. It holds
    paths and pixels only, so a fit view built on it reaches no annotation. (The datasets'
    ``check_decoded`` hooks are not run: they guard the scaling of annotations, which a fit view
    never reads, and cached images skip them as well.)"""

    paths: Sequence[Path]
    image_size: int
    cached: np.ndarray | None = None

    def __call__(self, index: int) -> np.ndarray:
        if self.cached is not None:
            return np.array(self.cached[index])  # a writable copy, not a view of the memmap
        image = resize_rgb(decode_rgb(self.paths[index]), self.image_size)
        return image if image.flags.writeable else image.copy()  # torch wants writable arrays


@dataclass(frozen=True)
class MirroredImages:
    """``2 * length`` images: those of ``images``, then the same mirrored left-right."""

    images: Callable[[int], np.ndarray]
    length: int

    def __call__(self, index: int) -> np.ndarray:
        return self.images(index) if index < self.length else self.images(index - self.length)[:, ::-1]


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
        self._images = FileImages(self.paths, image_size)  # the same loader serves the fit view

    def full_image(self, index: int) -> np.ndarray:
        return decode_rgb(self.paths[index])

    def image(self, index: int) -> np.ndarray:
        return self._images(index)

    def annotation(self, index: int) -> dict[str, Any]:
        return self._annotate(index) if self._annotate else {}

    def image_id(self, index: int) -> str:
        """The file's path relative to the dataset folder (its name without one)."""
        path = Path(self.paths[index])
        return path.relative_to(self._root).as_posix() if self._root is not None else path.name

    def fit_images(self) -> FitImages:
        return FitImages(len(self), self._images)

    def content_fingerprint(self) -> str:
        """Cheap content key (names relative to the root, sizes, mtimes) for derived-file caches."""
        from segbench.protocols.metrics.fid import content_hash
        return content_hash(self.paths[:len(self)], root=self._root)
