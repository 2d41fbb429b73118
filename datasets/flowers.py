"""Oxford 102 Flowers in its official layout, as GANSeg Tab.2 (foreground IoU) uses it
(REFERENCE 1.4).

Files (under ``--data-root``, or its ``flowers/`` / ``102flowers/`` subfolder): ``jpg/image_XXXXX.jpg``,
``segmim/segmim_XXXXX.jpg`` (XXXXX = the 1-based image id, 5 digits), ``setid.mat`` (read with
``scipy.io.loadmat``; 1 x N uint16 arrays ``trnid``, ``valid``, ``tstid``).

Splits follow ReDO / GANSeg (``flower_preprocess.py``), which swap the official names: ``train`` =
``tstid`` (6,149), ``val`` = ``valid`` (1,020), ``test`` = ``trnid`` (1,020).

Mask rule: a ``segmim`` pixel is BACKGROUND where R == 0 or G == 0 or B == 254 (the segmim images
paint the background blue, (0, 0, 254), and keep the flower's own colours), foreground otherwise
(``background_from_segmim``; REFERENCE 1.4, GANSeg ``flower_preprocess.py``). GANSeg applies
the rule AFTER resizing the segmim bilinearly to 128 x 128; the annotation ``fg_mask`` does the
same at ``image_size``. ``full_fg_mask(i)`` applies it at the stored resolution (1.0 foreground,
0.0 background) for the redo / melas IoU views.

Options: ``augment`` = "none" (default) | "ganseg" (fit view of ``train`` only, see
``datasets.fg_views``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from segbench.datasets.base import SplitInfo
from segbench.datasets.fg_views import CUB_FLOWERS_AUGMENTATION, ViewSplit, augment_choice, check_same_size, open_mask, \
    require_listed_files
from segbench.datasets.realformat import DataFormatError, Members, RealFormatDataset, locate, require

SUBDIRS = ("flowers", "102flowers", "oxford_flowers102", "Flowers")
SETID_KEYS = {"train": "tstid", "val": "valid", "test": "trnid"}  # ReDO / GANSeg swap train and test
LAYOUT = "<data-root>[/flowers]/ jpg/image_XXXXX.jpg, segmim/segmim_XXXXX.jpg, setid.mat (trnid, valid, tstid)"
SOURCE = ("Oxford 102 Flowers (Nilsback & Zisserman 2008, www.robots.ox.ac.uk/~vgg/data/flowers/102/: "
          "102flowers.tgz, 102segmentations.tgz, setid.mat)")
BACKGROUND_R, BACKGROUND_G, BACKGROUND_B = 0, 0, 254


def background_from_segmim(segmim: np.ndarray) -> np.ndarray:
    """bool [..., H, W]: R == 0 or G == 0 or B == 254 on uint8 RGB [..., H, W, 3] (GANSeg
    ``flower_preprocess.py``). Foreground is the complement."""
    pixels = np.asarray(segmim)
    if pixels.shape[-1] != 3:
        raise ValueError(f"segmim must be RGB [..., 3], got {pixels.shape}")
    return (pixels[..., 0] == BACKGROUND_R) | (pixels[..., 1] == BACKGROUND_G) | (pixels[..., 2] == BACKGROUND_B)


def read_setid(path: Path) -> dict[str, np.ndarray]:
    """``setid.mat`` -> split name -> image ids (int64, file order)."""
    from scipy.io import loadmat

    try:
        mat = loadmat(str(path))
    except Exception as exc:  # scipy raises several types for a damaged file
        raise DataFormatError(f"cannot read {path}: {exc}") from None
    out = {}
    for split, key in SETID_KEYS.items():
        if key not in mat:
            raise DataFormatError(f"{path} has no array {key!r} (keys: {', '.join(k for k in mat if k[0] != '_')})")
        ids = np.asarray(mat[key]).reshape(-1).astype(np.int64)
        if ids.size and ids.min() < 1:
            raise DataFormatError(f"{path}: {key} holds id {ids.min()}; ids start at 1")
        out[split] = ids
    return out


def image_name(image_id: int) -> str:
    return f"image_{image_id:05d}.jpg"


def segmim_name(image_id: int) -> str:
    return f"segmim_{image_id:05d}.jpg"


class Flowers(RealFormatDataset):
    NAME = "flowers"
    DEFAULT_IMAGE_SIZE = 128
    LAYOUT = LAYOUT
    SOURCE = SOURCE
    SPLITS = {
        "train": SplitInfo("train", 6149, "setid.mat tstid (ReDO/GANSeg training set)"),
        "val": SplitInfo("val", 1020, "setid.mat valid"),
        "test": SplitInfo("test", 1020, "setid.mat trnid (ReDO/GANSeg test set)"),
    }

    def __init__(self, root: Path | None = None, image_size: int = DEFAULT_IMAGE_SIZE, **options: Any) -> None:
        super().__init__(root, image_size, **options)
        self.augment = augment_choice(options, self.NAME)
        self.base = locate(root, self.NAME, SUBDIRS, "setid.mat", LAYOUT, SOURCE)
        self.image_dir = require(self.base, "jpg/", LAYOUT, SOURCE)
        self.segmim_dir = require(self.base, "segmim/", LAYOUT, SOURCE)
        self.ids = read_setid(require(self.base, "setid.mat", LAYOUT, SOURCE))

    def _build_members(self, split: str) -> Members:
        ids = self.ids[split]
        paths = [self.image_dir / image_name(i) for i in ids]
        require_listed_files(paths, f"images of split {split!r}", LAYOUT, SOURCE)
        require_listed_files([self.segmim_dir / segmim_name(i) for i in ids], f"segmim masks of split {split!r}",
                             LAYOUT, SOURCE)
        return Members(keys=[f"jpg/{image_name(i)}" for i in ids], paths=paths,
                       annotate=lambda n: {"fg_mask": self.fg_mask(int(ids[n]))})

    def fg_mask(self, image_id: int) -> np.ndarray:
        """bool [S, S]: the segmim resized to S x S (PIL bilinear), then not background."""
        path = self.segmim_dir / segmim_name(image_id)
        segmim = open_mask(path).convert("RGB")
        check_same_size((segmim.height, segmim.width), self.image_dir / image_name(image_id), path)
        resized = segmim.resize((self.image_size, self.image_size), Image.Resampling.BILINEAR)
        return ~background_from_segmim(np.asarray(resized))

    def full_fg_mask(self, image_id: int) -> np.ndarray:
        path = self.segmim_dir / segmim_name(image_id)
        mask = (~background_from_segmim(np.asarray(open_mask(path).convert("RGB")))).astype(np.float32)
        check_same_size(mask, self.image_dir / image_name(image_id), path)
        return mask

    def _split(self, name: str) -> ViewSplit:
        base = super()._split(name)
        ids = self.ids[name]
        augmentation = CUB_FLOWERS_AUGMENTATION if self.augment == "ganseg" and name == "train" else None
        return ViewSplit(base, lambda n: self.full_fg_mask(int(ids[n])), augmentation)
