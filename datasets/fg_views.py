"""What the masked official-layout datasets (CUB, Flowers, Taichi) add to ``realformat``:

- ``ViewSplit``: besides ``image(i)`` (the whole image resized to ``image_size``, the view of the
  ``ganseg`` IoU variant, from the resized cache when ``prepare`` built one), ``full_image(i)`` and
  ``full_fg_mask(i)`` at the stored resolution, from which a protocol builds the ``redo`` and
  ``melas`` views (``protocols.metrics.iou.prepare_image`` / the metric functions take full-res
  masks). Full-resolution arrays differ in size, so they are methods, not annotation keys
  (``batches`` stacks annotation keys).
- GANSeg's training augmentation (REFERENCE 2, "Data"), applied to the fit view only: the training
  images repeated ``repeat`` times, each draw randomly flipped horizontally and randomly resized-
  cropped (GANSeg ``datasets/datasets.py`` classes ``CUB``/``Flower``: RandomHorizontalFlip(0.5),
  then RandomResizedCrop((S, S), scale (0.9, 1), ratio (0.9, 1.1)) on the S x S image; ``TaichiTrain``:
  the flip only). As in torchvision, the random draws come from torch's global generator, so a
  method that restores ``torch.get_rng_state()`` when it resumes sees the same crops again.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode, RandomResizedCrop
from torchvision.transforms import functional as TF

from segbench.benchmark.errors import UserError
from segbench.datasets.base import FitImages, to_tensor
from segbench.datasets.image_files import check_same_size, to_8bit  # noqa: F401 (check_same_size re-exported)
from segbench.datasets.realformat import DataFormatError, RealFormatSplit, decode_rgb

AUGMENT_CHOICES = ("none", "ganseg")
MASK_THRESHOLD = 127.5  # GANSeg cub_preprocess.py: mask > 255 / 2 after the bilinear resize


@dataclass(frozen=True)
class GansegAugmentation:
    repeat: int = 3  # torch.cat((imgs, imgs, imgs)) in GANSeg's CUB / Flower datasets
    flip_p: float = 0.5
    crop: bool = True
    crop_scale: tuple[float, float] = (0.9, 1.0)
    crop_ratio: tuple[float, float] = (0.9, 1.1)


CUB_FLOWERS_AUGMENTATION = GansegAugmentation()
TAICHI_AUGMENTATION = GansegAugmentation(repeat=1, crop=False)  # TaichiTrain: horizontal flip only


def augment_choice(options: dict[str, Any], dataset: str) -> str:
    value = str(options.get("augment", "none"))
    if value not in AUGMENT_CHOICES:
        raise UserError(f"{dataset} augment={value!r}: one of {', '.join(AUGMENT_CHOICES)}")
    return value


def augment_image(image: torch.Tensor, augmentation: GansegAugmentation) -> torch.Tensor:
    """One random draw of the augmentation on a float [3, S, S] image in [0, 1] (output S x S)."""
    if torch.rand(1).item() < augmentation.flip_p:
        image = image.flip(-1)
    if augmentation.crop:
        top, left, height, width = RandomResizedCrop.get_params(image, list(augmentation.crop_scale),
                                                               list(augmentation.crop_ratio))
        image = TF.resized_crop(image, top, left, height, width, list(image.shape[-2:]),
                                interpolation=InterpolationMode.BILINEAR, antialias=True)
    return image.clamp_(0.0, 1.0)


class AugmentedFitImages(FitImages):
    """The fit view under augmentation: ``repeat * N`` items, item ``i`` a fresh random draw on
    image ``i % N``. Holds only the length, the image loader and the augmentation settings.

    A consumer that caches images must cache ``base_image(i % base_length)`` and call
    ``augment`` on every read (as GANSeg's ``RealImages`` does): caching ``self[i]`` would freeze
    one draw per item for the whole run."""

    def __init__(self, length: int, load_image: Callable[[int], np.ndarray],
                 augmentation: GansegAugmentation) -> None:
        super().__init__(length * augmentation.repeat, load_image)
        self.base_length = length
        self._augmentation = augmentation

    def base_image(self, index: int) -> torch.Tensor:
        """Image ``index`` (0 <= index < base_length) before augmentation, float [3, S, S]."""
        if not 0 <= index < self.base_length:
            raise IndexError(index)
        return to_tensor(self._load_image(index))

    def augment(self, image: torch.Tensor) -> torch.Tensor:
        """A fresh random draw of the augmentation on a float [3, S, S] image in [0, 1]."""
        return augment_image(image, self._augmentation)

    def __getitem__(self, index: int) -> torch.Tensor:
        if not 0 <= index < self._length:
            raise IndexError(index)
        return self.augment(self.base_image(index % self.base_length))


class ViewSplit(RealFormatSplit):
    """A ``RealFormatSplit`` plus the full-resolution views and the (optional) fit augmentation."""

    def __init__(self, base: RealFormatSplit, full_fg_mask: Callable[[int], np.ndarray] | None = None,
                 augmentation: GansegAugmentation | None = None) -> None:
        super().__init__(base.name, base.members, base._load_image, base.cached, image_size=base.image_size)
        self._full_fg_mask = full_fg_mask
        self.augmentation = augmentation

    def full_image(self, index: int) -> np.ndarray:
        """uint8 [H, W, 3] as stored (for the redo / melas views), writable."""
        return np.array(decode_rgb(self.paths[index]))

    def has_masks(self) -> bool:
        return self._full_fg_mask is not None

    def full_fg_mask(self, index: int) -> np.ndarray:
        """Foreground mask at the stored resolution: float32 [H, W] in [0, 1], foreground > 0.5."""
        if self._full_fg_mask is None:
            raise UserError(f"split {self.name!r} has no foreground masks")
        return self._full_fg_mask(index)

    def fit_images(self) -> FitImages:
        if self.augmentation is None:
            return FitImages(len(self), self.fit_loader())
        return AugmentedFitImages(len(self), self.fit_loader(), self.augmentation)


# --------------------------------------------------------------------------- mask files

def open_mask(path: Path) -> Image.Image:
    """The mask image, decoded, in an 8-bit mode (16-bit scaled, float refused: ``to_8bit``); a
    missing or corrupt file fails naming it."""
    from segbench.benchmark.errors import DataNotFoundError

    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"missing mask {path}")
    try:
        with Image.open(path) as im:
            im.load()
            return to_8bit(im.copy(), path)
    except (OSError, ValueError, SyntaxError) as exc:
        raise DataFormatError(f"corrupt mask {path}: {exc}") from None


def grey(im: Image.Image) -> Image.Image:
    """A single-channel mask; a grey mask saved as RGB gives the same values."""
    return im if im.mode == "L" else im.convert("L")


def grey_mask_full(path: Path) -> np.ndarray:
    """float32 [H, W] = value / 255 of a grey mask (CUB ``segmentations/*.png``, Taichi test masks)."""
    return np.asarray(grey(open_mask(path)), dtype=np.float32) / 255.0


def grey_mask_resized(path: Path, size: int, image_path: Path | None = None) -> np.ndarray:
    """bool [size, size]: the grey mask resized whole with PIL bilinear, then > 127.5 (GANSeg
    ``cub_preprocess.py`` order: resize first, threshold second). With ``image_path`` the mask
    must have its image's size (a resize would otherwise hide a mismatch)."""
    mask = grey(open_mask(path))
    if image_path is not None:
        check_same_size((mask.height, mask.width), image_path, path)
    resized = mask.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(resized) > MASK_THRESHOLD


def missing_files(paths: list[Path]) -> list[Path]:
    return [p for p in paths if not p.is_file()]


def require_listed_files(paths: list[Path], what: str, layout: str, source: str) -> None:
    """Every file a list names must exist: one DataNotFoundError naming the first missing one."""
    from segbench.benchmark.errors import DataNotFoundError

    missing = missing_files(paths)
    if missing:
        raise DataNotFoundError(f"missing {len(missing):,} of {len(paths):,} {what}, first: {missing[0]}; "
                                f"expected layout: {layout}; source: {source}")
