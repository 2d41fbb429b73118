"""CUB-200-2011 in its official layout, as GANSeg Tab.2 (foreground IoU) and the CUB keypoint
protocol of GANSeg Sec. 4.4 use it (REFERENCE 1.4).

Files (under ``--data-root``, or its ``CUB_200_2011/`` / ``cub/`` subfolder):
``images.txt`` (``id path``), ``images/<class>/<name>.jpg``, the ReDO ``train_val_test_split.txt``
(``id label``: 0 train 10,000 / 1 val 788 / 2 test 1,000), ``segmentations/<class>/<name>.png``
(the separate ``segmentations.tgz``; inside the CUB folder or beside it), ``bounding_boxes.txt``
(``id x y w h``) and ``parts/part_locs.txt`` (``id part x y visible``, 15 parts per image).

Views: ``image(i)`` is the whole image resized to ``image_size`` with PIL bilinear (aspect not
kept; GANSeg ``cub_preprocess.py``); annotation ``fg_mask`` is the grey mask resized the same way
then > 127.5 (GANSeg's order). ``full_image(i)`` / ``full_fg_mask(i)`` (value / 255, fg > 0.5)
give the stored resolution for the redo / melas IoU views. Keypoints: the 15 part locations scaled
with the whole-image resize (x * S / W, y * S / H; W, H read from the image header),
``landmark_visible`` from the file's flag, ``ref_length`` = S (the image edge, GANSeg's
normaliser), ``bbox`` (x, y, w, h) scaled alike.

Options: ``augment`` = "none" (default) | "ganseg" (fit view of ``train`` only: 3x repeat, flip,
RandomResizedCrop 0.9-1, see ``datasets.fg_views``); ``annotations`` = "all" (default) | "masks" |
"keypoints" (read only what a protocol needs; the unused files need not be present).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from segbench.benchmark.errors import UserError
from segbench.datasets.base import SplitInfo
from segbench.datasets.fg_views import (CUB_FLOWERS_AUGMENTATION, ViewSplit, augment_choice, check_same_size, grey_mask_full,
                               grey_mask_resized, require_listed_files)
from segbench.datasets.list_files import inside_path
from segbench.datasets.realformat import DataFormatError, Members, RealFormatDataset, locate, read_table, require

SUBDIRS = ("CUB_200_2011", "cub", "CUB")
SPLIT_LABELS = {"train": 0, "val": 1, "test": 2}  # ReDO train_val_test_split.txt
NUM_PARTS = 15  # parts/parts.txt: back, beak, belly, breast, crown, forehead, left eye, ... , throat
ANNOTATION_CHOICES = ("all", "masks", "keypoints")
LAYOUT = ("<data-root>[/CUB_200_2011]/ images.txt, images/<class>/<name>.jpg, train_val_test_split.txt (ReDO), "
          "segmentations/<class>/<name>.png (here or beside the CUB folder), bounding_boxes.txt, "
          "parts/part_locs.txt")
SOURCE = ("CUB-200-2011 (Wah et al. 2011, www.vision.caltech.edu/datasets/cub_200_2011/: CUB_200_2011.tgz and "
          "segmentations.tgz); train_val_test_split.txt from ReDO (github.com/mickaelChen/ReDO)")


# --------------------------------------------------------------------------- the list files

def read_images_txt(path: Path) -> tuple[np.ndarray, list[str]]:
    """``images.txt``: (ids int64 [N], relative paths) in file order."""
    ids, paths = [], []
    for lineno, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        tokens = line.split(maxsplit=1)
        if len(tokens) != 2 or not tokens[0].isdigit():
            raise DataFormatError(f"{path}:{lineno}: expected `id relative/path.jpg`, got {line.strip()[:60]!r}")
        ids.append(int(tokens[0]))
        paths.append(inside_path(tokens[1], f"{path}:{lineno}"))
    if len(set(ids)) != len(ids):
        raise DataFormatError(f"{path}: repeated image ids")
    return np.array(ids, np.int64), paths


def read_split_labels(path: Path, ids: np.ndarray) -> np.ndarray:
    """The ReDO split label (0/1/2) of every id in ``ids`` (a missing id fails naming it)."""
    table = read_table(path, 1)
    labels = table.rows([str(i) for i in ids])[:, 0]
    bad = ~np.isin(labels, list(SPLIT_LABELS.values()))
    if bad.any():
        raise DataFormatError(f"{path}: label {labels[bad][0]:g} for image {ids[bad][0]}; labels are 0, 1, 2")
    return labels.astype(np.int64)


def split_indices(labels: np.ndarray) -> dict[str, np.ndarray]:
    """Positions (in images.txt order) of each split."""
    return {name: np.flatnonzero(labels == label) for name, label in SPLIT_LABELS.items()}


def read_part_locs(path: Path, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``parts/part_locs.txt`` -> (xy float64 [N, 15, 2] in stored pixels, visible bool [N, 15]) for
    ``ids`` in that order. Every image must have exactly the 15 parts 1..15."""
    tokens = Path(path).read_text().split()
    if len(tokens) % 5:
        raise DataFormatError(f"{path}: {len(tokens)} fields is not a whole number of `image part x y visible` rows "
                              "(truncated?)")
    try:
        rows = np.array(tokens, np.float64).reshape(-1, 5)
    except ValueError:
        raise DataFormatError(f"{path}: non-numeric field (expected `image part x y visible` rows)") from None
    image_ids, part_ids = rows[:, 0].astype(np.int64), rows[:, 1].astype(np.int64)
    if part_ids.min(initial=1) < 1 or part_ids.max(initial=1) > NUM_PARTS:
        raise DataFormatError(f"{path}: part ids must be 1..{NUM_PARTS}")
    position = {int(i): n for n, i in enumerate(ids)}
    xy = np.zeros((len(ids), NUM_PARTS, 2))
    visible = np.zeros((len(ids), NUM_PARTS), bool)
    seen = np.zeros((len(ids), NUM_PARTS), np.int64)
    keep = np.array([i in position for i in image_ids.tolist()], bool)
    where = np.array([position[i] for i in image_ids[keep].tolist()], np.int64)
    parts = part_ids[keep] - 1
    np.add.at(seen, (where, parts), 1)
    xy[where, parts] = rows[keep, 2:4]
    visible[where, parts] = rows[keep, 4] > 0
    if (seen != 1).any():
        n, p = np.argwhere(seen != 1)[0]
        raise DataFormatError(f"{path}: image {ids[n]} has {seen[n, p]} rows for part {p + 1} (each of its "
                              f"{NUM_PARTS} parts needs exactly one; truncated or wrong file?)")
    return xy, visible


# --------------------------------------------------------------------------- the dataset

class CUB(RealFormatDataset):
    NAME = "cub"
    DEFAULT_IMAGE_SIZE = 128
    LAYOUT = LAYOUT
    SOURCE = SOURCE
    SPLITS = {
        "train": SplitInfo("train", 10000, "ReDO label 0: GAN training / keypoint regression fit"),
        "val": SplitInfo("val", 788, "ReDO label 1"),
        "test": SplitInfo("test", 1000, "ReDO label 2: foreground IoU and keypoint test"),
    }

    def __init__(self, root: Path | None = None, image_size: int = DEFAULT_IMAGE_SIZE, **options: Any) -> None:
        super().__init__(root, image_size, **options)
        self.augment = augment_choice(options, self.NAME)
        self._sizes: dict[int, tuple[int, int]] = {}
        self.annotations = str(options.get("annotations", "all"))
        if self.annotations not in ANNOTATION_CHOICES:
            raise UserError(f"cub annotations={self.annotations!r}: one of {', '.join(ANNOTATION_CHOICES)}")
        self.base = locate(root, self.NAME, SUBDIRS, "images.txt", LAYOUT, SOURCE)
        self.image_dir = self._file("images/")
        self.ids, self.relpaths = read_images_txt(self._file("images.txt"))
        self.positions = split_indices(read_split_labels(self._file("train_val_test_split.txt"), self.ids))
        self.mask_dir = self._file(("segmentations/", "../segmentations/")) if self.wants("masks") else None
        if self.wants("keypoints"):
            self.part_xy, self.part_visible = read_part_locs(self._file("parts/part_locs.txt"), self.ids)
            self.bboxes = read_table(self._file("bounding_boxes.txt"), 4).rows([str(i) for i in self.ids])

    def _file(self, relpath: str | tuple[str, ...]) -> Path:
        return require(self.base, relpath, LAYOUT, SOURCE)

    def wants(self, kind: str) -> bool:
        return self.annotations in ("all", kind)

    def image_path(self, position: int) -> Path:
        return self.image_dir / self.relpaths[position]

    def mask_path(self, position: int) -> Path:
        return self.mask_dir / (self.relpaths[position].rsplit(".", 1)[0] + ".png")

    def stored_size(self, position: int) -> tuple[int, int]:
        """(W, H) of the stored image, from its header (remembered)."""
        if position not in self._sizes:
            with Image.open(self.image_path(position)) as im:
                self._sizes[position] = im.size
        return self._sizes[position]

    def _build_members(self, split: str) -> Members:
        positions = self.positions[split]
        paths = [self.image_path(p) for p in positions]
        require_listed_files(paths, f"images of split {split!r}", LAYOUT, SOURCE)
        if self.mask_dir is not None:
            require_listed_files([self.mask_path(p) for p in positions], f"masks of split {split!r}", LAYOUT,
                                 SOURCE)
        return Members(keys=[self.relpaths[p] for p in positions], paths=paths,
                       annotate=lambda i: self.annotate(int(positions[i])))

    def annotate(self, position: int) -> dict[str, Any]:
        size, out = self.image_size, {}
        if self.mask_dir is not None:
            out["fg_mask"] = grey_mask_resized(self.mask_path(position), size, self.image_path(position))
        if self.wants("keypoints"):
            width, height = self.stored_size(position)
            scale = np.array([size / width, size / height])
            out["landmarks"] = (self.part_xy[position] * scale).astype(np.float32)
            out["landmark_visible"] = self.part_visible[position].copy()
            out["ref_length"] = np.float32(size)
            out["bbox"] = (self.bboxes[position] * np.tile(scale, 2)).astype(np.float32)
        return out

    def full_fg_mask(self, position: int) -> np.ndarray:
        mask = grey_mask_full(self.mask_path(position))
        check_same_size(mask, self.image_path(position), self.mask_path(position))
        return mask

    def _split(self, name: str) -> ViewSplit:
        base = super()._split(name)
        positions = self.positions[name]
        masks = (lambda i: self.full_fg_mask(int(positions[i]))) if self.mask_dir is not None else None
        augmentation = CUB_FLOWERS_AUGMENTATION if self.augment == "ganseg" and name == "train" else None
        return ViewSplit(base, masks, augmentation)
