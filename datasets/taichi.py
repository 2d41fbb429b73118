"""Tai-Chi-HD as GANSeg Tab.3 uses it (REFERENCE 1.3, 1.4), in the layout GANSeg's
``datasets/datasets.py`` reads (``Taichi*`` classes), with the motion-cosegmentation folder names
also accepted.

Files (under ``--data-root``, or its ``taichi/`` subfolder):
- ``train/<video>/<frame>.png`` (or .jpg): the GAN training frames (split ``train``; GANSeg reads
  this folder with ``ImageFolder``). 3,049 training videos (GANSeg Sec. 4.1); frames per video
  vary, so the count check is on the videos.
- ``taichi-256/{train,test}/<file_name>`` (or ``eval_images/taichi-256/...``, as unpacked from
  motion-cosegmentation's ``eval_images.tar.gz``): the 256 x 256 evaluation frames.
- ``taichi_train_gt.pkl`` / ``taichi_test_gt.pkl`` (or in ``landmark/`` (GANSeg) or ``landmarks/``
  (motion-cosegmentation)): pickled pandas DataFrames with columns ``file_name``, ``frame_number``,
  ``value`` = float [18, 2] (x, y) in pixels of the 256-px frames, -1 where missing (COCO-18).
  They define splits ``regression_fit`` (5,000 rows, frames in ``taichi-256/train``) and ``test``
  (300 rows, frames in ``taichi-256/test``). Test and train file names collide (all 300 test names
  also name train frames), so rows are keyed by (split, file_name).
- ``taichi-test-masks/<file_name>``: one grey PNG per test frame, 256 x 256 (GANSeg's folder name;
  the masks are not part of motion-cosegmentation's release). Foreground: the mask resized to
  ``image_size`` (PIL bilinear, GANSeg's order) then > 127.5. GANSeg instead truncates value / 255 to
  an integer, which keeps only pixels that stay exactly 255 after the resize and erodes the
  boundary; REFERENCE 1.4 asks for > 0.5, which this is.

Annotations (``regression_fit``, ``test``): ``keypoints_256`` float32 [18, 2] as in the pickle (the
units the MAE is reported in); ``landmarks`` = those scaled to ``image_size`` (S / 256), -1 kept
where missing; ``landmark_visible`` = both coordinates present; ``fg_mask`` bool [S, S] (test).

Options: ``augment`` = "none" (default) | "ganseg" (fit view of ``train`` only: random horizontal
flip, GANSeg ``TaichiTrain``; see ``datasets.fg_views``).
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from segbench.datasets.base import SplitInfo
from segbench.datasets.fg_views import (TAICHI_AUGMENTATION, ViewSplit, augment_choice, check_same_size,
                                       grey_mask_full, grey_mask_resized, require_listed_files)
from segbench.datasets.list_files import inside_path
from segbench.datasets.realformat import CountMismatchWarning, DataFormatError, Members, RealFormatDataset, locate, log, \
    require

SUBDIRS = ("taichi", "Taichi", "taichi-hd")
EVAL_FRAME_SIZE = 256  # keypoints are pixels of the 256 x 256 evaluation frames
NUM_KEYPOINTS = 18  # COCO-18
MISSING = -1.0
EXPECTED_TRAIN_VIDEOS = 3049  # GANSeg Sec. 4.1
FRAME_SUFFIXES = (".png", ".jpg", ".jpeg")
EVAL_SPLIT_FOLDER = {"regression_fit": "train", "test": "test"}  # split -> taichi-256/<folder>, <folder>_gt.pkl
LAYOUT = ("<data-root>[/taichi]/ train/<video>/<frame>.png, taichi-256/{train,test}/<file_name> (or "
          "eval_images/taichi-256/), taichi_{train,test}_gt.pkl (or landmark(s)/), taichi-test-masks/<file_name>")
SOURCE = ("Tai-Chi-HD frames (github.com/AliaksandrSiarohin/video-preprocessing); eval_images.tar.gz and "
          "landmarks/taichi_*_gt.pkl from github.com/AliaksandrSiarohin/motion-cosegmentation; taichi-test-masks "
          "as read by GANSeg (github.com/xingzhehe/GANSeg, datasets/datasets.py)")


def read_keypoint_pickle(path: Path) -> tuple[list[str], np.ndarray]:
    """(file names, values float64 [N, 18, 2]) in row order; a malformed file fails naming it.
    The pickles are the official files of the benchmark: unpickling runs code, so only point this
    at files you trust."""
    import pandas as pd

    try:
        frame = pd.read_pickle(path)
    except Exception as exc:  # unpickling raises many types
        raise DataFormatError(f"cannot read {path} as a pickled DataFrame: {exc}") from None
    if not hasattr(frame, "columns") or not {"file_name", "value"} <= set(frame.columns):
        raise DataFormatError(f"{path}: expected a DataFrame with columns file_name, frame_number, value")
    names = [str(n) for n in frame["file_name"]]
    values = []
    for row, value in enumerate(frame["value"]):
        array = np.asarray(value, dtype=np.float64)
        if array.shape != (NUM_KEYPOINTS, 2):
            raise DataFormatError(f"{path}: row {row} ({names[row]}) has value of shape {array.shape}, expected "
                                  f"({NUM_KEYPOINTS}, 2)")
        values.append(array)
    if len(set(names)) != len(names):
        raise DataFormatError(f"{path}: a file_name appears twice")
    for row, name in enumerate(names):
        inside_path(name, f"{path}: row {row} file_name")
    return names, np.stack(values) if values else np.zeros((0, NUM_KEYPOINTS, 2))


def present(values: np.ndarray) -> np.ndarray:
    """bool, same shape: the coordinate is not the -1 'missing' marker."""
    return np.abs(np.asarray(values) - MISSING) > 1e-6


def list_frames(folder: Path) -> tuple[int, list[Path]]:
    """(number of video folders, sorted frame paths ``<video>/<frame>``)."""
    videos = sorted(p for p in folder.iterdir() if p.is_dir())
    frames = [f for v in videos for f in sorted(v.iterdir()) if f.suffix.lower() in FRAME_SUFFIXES]
    return len(videos), frames


class Taichi(RealFormatDataset):
    NAME = "taichi"
    DEFAULT_IMAGE_SIZE = 128
    LAYOUT = LAYOUT
    SOURCE = SOURCE
    SPLITS = {
        "train": SplitInfo("train", EXPECTED_TRAIN_VIDEOS,
                           "GAN training frames train/<video>/<frame>; the size checked is the number of videos"),
        "regression_fit": SplitInfo("regression_fit", 5000, "taichi_train_gt.pkl frames in taichi-256/train"),
        "test": SplitInfo("test", 300, "taichi_test_gt.pkl frames in taichi-256/test, with foreground masks"),
    }

    def __init__(self, root: Path | None = None, image_size: int = DEFAULT_IMAGE_SIZE, **options: Any) -> None:
        super().__init__(root, image_size, **options)
        self.augment = augment_choice(options, self.NAME)
        self.base = locate(root, self.NAME, SUBDIRS, ("taichi-256", "eval_images/taichi-256"), LAYOUT, SOURCE)
        self.train_dir = self._file("train/")
        self.eval_dir = self._file(("taichi-256/", "eval_images/taichi-256/"))
        self.mask_dir = self._file("taichi-test-masks/")
        self.names: dict[str, list[str]] = {}
        self.keypoints: dict[tuple[str, str], np.ndarray] = {}  # (split, file_name) -> [18, 2]
        for split, folder in EVAL_SPLIT_FOLDER.items():
            self._file(f"{self.eval_dir.relative_to(self.base)}/{folder}/")
            pickle = f"taichi_{folder}_gt.pkl"
            names, values = read_keypoint_pickle(self._file((pickle, f"landmark/{pickle}", f"landmarks/{pickle}")))
            self.names[split] = names
            self.keypoints.update({(split, n): v for n, v in zip(names, values)})
        self.n_videos: int | None = None
        self._videos_checked = False

    def _file(self, relpath: str | tuple[str, ...]) -> Path:
        return require(self.base, relpath, LAYOUT, SOURCE)

    def eval_path(self, split: str, file_name: str) -> Path:
        return self.eval_dir / EVAL_SPLIT_FOLDER[split] / file_name

    def _build_members(self, split: str) -> Members:
        if split == "train":
            self.n_videos, frames = list_frames(self.train_dir)
            if not frames:
                raise DataFormatError(f"no frames under {self.train_dir}/<video>/ ({', '.join(FRAME_SUFFIXES)}); "
                                      f"expected layout: {LAYOUT}")
            return Members(keys=[str(f.relative_to(self.base)) for f in frames], paths=frames)
        names = self.names[split]
        paths = [self.eval_path(split, n) for n in names]
        require_listed_files(paths, f"frames of split {split!r}", LAYOUT, SOURCE)
        if split == "test":
            require_listed_files([self.mask_dir / n for n in names], "test masks", LAYOUT, SOURCE)
        return Members(keys=[str(p.relative_to(self.base)) for p in paths], paths=paths,
                       annotate=lambda i: self.annotate(split, names[i]))

    def annotate(self, split: str, file_name: str) -> dict[str, Any]:
        """Ground truth of the frame ``file_name`` of ``split`` (the pair is the key)."""
        value = self.keypoints[(split, file_name)]
        scaled = np.where(present(value), value * (self.image_size / EVAL_FRAME_SIZE), MISSING)
        out = {"keypoints_256": value.astype(np.float32), "landmarks": scaled.astype(np.float32),
               "landmark_visible": present(value).all(axis=-1)}
        if split == "test":
            out["fg_mask"] = grey_mask_resized(self.mask_dir / file_name, self.image_size,
                                               self.eval_path(split, file_name))
        return out

    def full_fg_mask(self, split: str, file_name: str) -> np.ndarray:
        """The test mask at the stored resolution (value / 255), the size of its frame."""
        path = self.mask_dir / file_name
        mask = grey_mask_full(path)
        check_same_size(mask, self.eval_path(split, file_name), path)
        return mask

    def expected_size(self, split: str) -> int:
        if split == "train":  # frames per video vary: no documented frame count (videos are checked)
            return len(self.members("train"))
        return super().expected_size(split)

    def _check_videos(self) -> bool:
        self.members("train")
        if self.n_videos == EXPECTED_TRAIN_VIDEOS or self._videos_checked:
            return self.n_videos == EXPECTED_TRAIN_VIDEOS
        self._videos_checked = True  # warn once per dataset object, as the other counts
        message = (f"taichi split 'train': found {self.n_videos:,} video folders, the documented number is "
                   f"{EXPECTED_TRAIN_VIDEOS:,} (incomplete copy?)")
        log.warning(message)
        warnings.warn(message, CountMismatchWarning, stacklevel=3)
        return False

    def check_decoded(self, path: Path, image: np.ndarray) -> None:
        if self.eval_dir in path.parents and image.shape[:2] != (EVAL_FRAME_SIZE, EVAL_FRAME_SIZE):
            raise DataFormatError(f"{path} is {image.shape[0]}x{image.shape[1]}; the evaluation frames are "
                                  f"{EVAL_FRAME_SIZE}x{EVAL_FRAME_SIZE} (the keypoints are pixels of that size)")

    def verify(self, n_decode: int = 3) -> dict[str, Any]:
        report = super().verify(n_decode)
        row = report["splits"]["train"]
        row.update(frames=row["found"], found=self.n_videos, expected=EXPECTED_TRAIN_VIDEOS,
                   count_ok=self.n_videos == EXPECTED_TRAIN_VIDEOS, unit="videos")
        return report

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        out["split_sizes"]["train"] = {"found": self.n_videos, "expected": EXPECTED_TRAIN_VIDEOS, "unit": "videos",
                                       "frames": len(self.members("train"))}
        return out

    def _split(self, name: str) -> ViewSplit:
        base = super()._split(name)
        if name == "train":
            self._check_videos()
            return ViewSplit(base, None, TAICHI_AUGMENTATION if self.augment == "ganseg" else None)
        if name == "test":
            names = self.names[name]
            return ViewSplit(base, lambda i: self.full_fg_mask(name, names[i]))
        return ViewSplit(base)

    def frame_key(self, split: str, index: int) -> tuple[str, str]:
        """(split, file_name) of item ``index``: the key of its keypoint row."""
        return split, self.names[split][index]
