"""CelebA in its official layout, as the two landmark benchmarks of GANSeg Tab.1 use it
(REFERENCE 1.2).

``celeba_wild``: in-the-wild images ``img_celeba/``; an image is kept when its face box covers
at least 30 % of it (bbox_w * bbox_h >= 0.3 * H * W with H, W from ``list_imsize_celeba.txt``,
height first; GANSeg's rule, Liu et al. use > 0.3); the WHOLE image is resized to
``image_size`` (aspect not kept) and the five MAFL landmarks scaled with it. Splits: MAFL's
``celebA_training.txt`` (GAN training, 45,609 after the filter), ``training.txt`` (regression
fit, 5,379) and ``testing.txt`` (test, 283).

``celeba_aligned``: the aligned 178x218 crops ``img_align_celeba/`` resized to ``image_size``
with ``list_landmarks_align_celeba.txt``. Splits: MAFL training (19,000) for the regression fit,
MAFL testing (1,000) for the test, and for training "CelebA training set without MAFL (160k
images)" (GANSeg Sec. 4.1), i.e. ``celebA_training.txt`` (161,962 = the official 162,770 training
partition minus the 808 MAFL test images in it); option ``train_list="all_minus_mafl"`` takes
instead all 202,599 images minus MAFL training and testing (182,599).

Landmarks are (x, y) pixels at ``image_size``: x * S / W, y * S / H (S = image_size); the
reference length is the inter-ocular distance |lefteye - righteye| at that size.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from segbench.benchmark.errors import UserError
from segbench.datasets.base import SplitInfo
from segbench.datasets.realformat import (DataFormatError, FolderFiles, Members, RealFormatDataset, locate, read_name_list,
                                 read_table, require)

SUBDIRS = ("celeba", "CelebA")  # --data-root may name the CelebA folder or its parent
LANDMARK_NAMES = ("lefteye", "righteye", "nose", "leftmouth", "rightmouth")  # MAFL order
MIN_FACE_AREA_NUM, MIN_FACE_AREA_DEN = 3, 10  # keep when bbox area >= 3/10 of the image, compared exactly
ALIGNED_HW = (218, 178)  # every img_align_celeba image is 178 wide, 218 high
MAFL_TRAIN, MAFL_TEST, CELEBA_TRAINING = "MAFL/training.txt", "MAFL/testing.txt", "MAFL/celebA_training.txt"
SOURCE = ("CelebA (Liu et al. ICCV 2015, mmlab.ie.cuhk.edu.hk/projects/CelebA.html: Img/, Anno/); MAFL split "
          "lists (Zhang et al. ECCV 2014; celebA_training.txt as used by SCOPS and GANSeg); list_imsize_celeba.txt "
          "(`name H W`, height first, as used by SCOPS; or write it from the images in img_celeba/)")
LAYOUT_WILD = ("<data-root>[/celeba]/ img_celeba/*.jpg, list_bbox_celeba.txt, list_landmarks_celeba.txt, "
               "list_imsize_celeba.txt, MAFL/{celebA_training,training,testing}.txt (list files may sit in Anno/)")
LAYOUT_ALIGNED = ("<data-root>[/celeba]/ img_align_celeba/*.jpg, list_landmarks_align_celeba.txt, "
                  "MAFL/{celebA_training,training,testing}.txt (list files may sit in Anno/)")


def anno(name: str) -> tuple[str, str]:
    """A list file at the top of the CelebA folder or in the official download's ``Anno/``."""
    return name, f"Anno/{name}"


def keep_face_area(bbox_wh: np.ndarray, image_hw: np.ndarray) -> np.ndarray:
    """bool [N]: bbox_w * bbox_h >= 0.3 * H * W, in integers (no float rounding at the boundary)."""
    area = np.rint(bbox_wh).astype(np.int64).prod(axis=1)
    image_area = np.rint(image_hw).astype(np.int64).prod(axis=1)
    return MIN_FACE_AREA_DEN * area >= MIN_FACE_AREA_NUM * image_area


def scale_landmarks(points_xy: np.ndarray, image_hw: np.ndarray, size: int) -> np.ndarray:
    """[N, L, 2] (x, y) in stored pixels -> pixels of the size x size resized whole image."""
    hw = np.asarray(image_hw, np.float64).reshape(-1, 1, 2)
    scale = np.concatenate([size / hw[..., 1:2], size / hw[..., 0:1]], axis=-1)  # (S/W, S/H)
    return (np.asarray(points_xy, np.float64) * scale).astype(np.float32)


def landmark_annotation(points: np.ndarray) -> dict[str, Any]:
    return {"landmarks": points, "landmark_visible": np.ones(len(points), bool),
            "ref_length": np.float32(np.linalg.norm(points[0] - points[1]))}


class _CelebA(RealFormatDataset):
    """Shared part: per split, image names, stored sizes (H, W) and scaled landmarks."""

    IMAGE_DIR: str
    LAYOUT: str
    SOURCE = SOURCE

    def _file(self, relpath: str | tuple[str, ...]) -> Path:
        return require(self.base, relpath, self.LAYOUT, self.SOURCE)

    def _set_split(self, split: str, names: list[str], image_hw: np.ndarray, points: np.ndarray) -> None:
        self._names[split] = names
        self._image_hw[split] = np.asarray(image_hw, np.int64)
        self._landmarks[split] = scale_landmarks(points.reshape(-1, len(LANDMARK_NAMES), 2), image_hw,
                                                 self.image_size)

    def _locate(self, root: Path) -> None:
        self.base = locate(root, self.NAME, SUBDIRS, (self.IMAGE_DIR, f"Img/{self.IMAGE_DIR}"), self.LAYOUT,
                           self.SOURCE)
        self.image_dir = self._file((f"{self.IMAGE_DIR}/", f"Img/{self.IMAGE_DIR}/"))
        self._names: dict[str, list[str]] = {}
        self._image_hw: dict[str, np.ndarray] = {}
        self._landmarks: dict[str, np.ndarray] = {}

    def _build_members(self, split: str) -> Members:
        names, points = self._names[split], self._landmarks[split]
        return Members(keys=names, paths=FolderFiles(self.image_dir, names),
                       annotate=lambda i: landmark_annotation(points[i]))

    def split_names(self, split: str) -> list[str]:
        return list(self._names[split])


class CelebAWild(_CelebA):
    NAME = "celeba_wild"
    IMAGE_DIR = "img_celeba"
    LAYOUT = LAYOUT_WILD
    SPLITS = {
        "train": SplitInfo("train", 45609, "MAFL celebA_training.txt after the face-area filter (GAN training)"),
        "regression_fit": SplitInfo("regression_fit", 5379, "MAFL training.txt after the face-area filter"),
        "test": SplitInfo("test", 283, "MAFL testing.txt after the face-area filter"),
    }
    LISTS = {"train": CELEBA_TRAINING, "regression_fit": MAFL_TRAIN, "test": MAFL_TEST}

    def __init__(self, root: Path | None = None, image_size: int = 128, **options: Any) -> None:
        super().__init__(root, image_size, **options)
        self._locate(Path(root))
        sizes = read_table(self._file(anno("list_imsize_celeba.txt")), 2)
        bboxes = read_table(self._file(anno("list_bbox_celeba.txt")), 4)
        points = read_table(self._file(anno("list_landmarks_celeba.txt") + ("list_landmarks_unalign_celeba.txt",)),
                            2 * len(LANDMARK_NAMES))
        self._stored_hw: dict[str, tuple[int, int]] = {}
        for split, list_file in self.LISTS.items():
            listed = read_name_list(self._file(list_file))
            image_hw = sizes.rows(listed)
            keep = keep_face_area(bboxes.rows(listed)[:, 2:4], image_hw)
            names = [n for n, k in zip(listed, keep) if k]
            self._set_split(split, names, image_hw[keep], points.rows(names))
            self._stored_hw.update(zip(names, map(tuple, self._image_hw[split].tolist())))

    def check_decoded(self, path: Path, image: np.ndarray) -> None:
        expected = self._stored_hw.get(path.name)
        if expected is not None and tuple(image.shape[:2]) != expected:
            raise DataFormatError(f"{path} is {image.shape[0]}x{image.shape[1]} (HxW) but list_imsize_celeba.txt "
                                  f"says {expected[0]}x{expected[1]}; its landmarks would be mis-scaled")


class CelebAAligned(_CelebA):
    NAME = "celeba_aligned"
    IMAGE_DIR = "img_align_celeba"
    LAYOUT = LAYOUT_ALIGNED
    SPLITS = {
        "train": SplitInfo("train", 161962, "celebA_training.txt: CelebA training partition minus MAFL test"),
        "regression_fit": SplitInfo("regression_fit", 19000, "MAFL training.txt"),
        "test": SplitInfo("test", 1000, "MAFL testing.txt"),
    }
    TRAIN_LISTS = {"celeba_training": 161962, "all_minus_mafl": 182599}  # option value -> documented size

    def __init__(self, root: Path | None = None, image_size: int = 128, **options: Any) -> None:
        super().__init__(root, image_size, **options)
        self.train_list = options.get("train_list", "celeba_training")
        if self.train_list not in self.TRAIN_LISTS:
            raise UserError(f"celeba_aligned train_list={self.train_list!r}: one of {', '.join(self.TRAIN_LISTS)}")
        self._locate(Path(root))
        points = read_table(self._file(anno("list_landmarks_align_celeba.txt")), 2 * len(LANDMARK_NAMES))
        lists = {"regression_fit": read_name_list(self._file(MAFL_TRAIN)),
                 "test": read_name_list(self._file(MAFL_TEST))}
        if self.train_list == "celeba_training":
            lists["train"] = read_name_list(self._file(CELEBA_TRAINING))
        else:
            mafl = set(lists["regression_fit"]) | set(lists["test"])
            lists["train"] = [n for n in points.names if n not in mafl]
        for split in self.SPLITS:
            names = lists[split]
            self._set_split(split, names, np.tile(ALIGNED_HW, (len(names), 1)), points.rows(names))

    def expected_size(self, split: str) -> int:
        return self.TRAIN_LISTS[self.train_list] if split == "train" else super().expected_size(split)

    def check_decoded(self, path: Path, image: np.ndarray) -> None:
        if tuple(image.shape[:2]) != ALIGNED_HW:
            raise DataFormatError(f"{path} is {image.shape[0]}x{image.shape[1]} (HxW); aligned CelebA images are "
                                  f"{ALIGNED_HW[0]}x{ALIGNED_HW[1]} (landmarks are scaled from that size)")
