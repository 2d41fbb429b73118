"""``faces_wild``: 3,462 in-the-wild face photos (YouTube Faces frames) with five MAFL-style
landmarks, from ``../shared/data/faces_wild68`` (see its README).

Only one split ships, so we make an identity-disjoint one: an identity (file name without the
trailing ``_<nn>``) is a test identity when SHA-1(identity) mod 5 == 0. That is deterministic,
independent of file order, and puts 65 of 347 identities (642 images, 18.5 %) in ``test``; the
other 2,820 images form ``fit`` (method training AND landmark-regression fit, like MAFL training
in the wild-CelebA protocol). Images are resized whole to ``image_size`` (aspect not kept) and the
landmarks scaled with them, as GANSeg's wild-CelebA preprocessing does.
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import numpy as np

from segbench.datasets.base import Dataset, SplitInfo
from segbench.datasets.image_files import ImageFileSplit, image_hw
from segbench.datasets.list_files import DataFormatError, read_manifest
from segbench.datasets.realformat import check_count, locate, require

SUBDIR = "faces_wild68"
LANDMARK_FILE = "landmarks5.csv"
LANDMARK_NAMES = ("lefteye", "righteye", "nose", "leftmouth", "rightmouth")  # MAFL order
TEST_MODULUS = 5  # 1 in 5 identities (by hash) is a test identity
LAYOUT = (f"<data-root>/{SUBDIR}/{LANDMARK_FILE} (split,file,width,height,lefteye_x,...,rightmouth_y) "
          f"and <data-root>/{SUBDIR}/images/train/<Identity>_<nn>.jpg")
SOURCE = "frames of YouTube Faces (Wolf et al. 2011) with 68-point landmarks, as in ../shared/data/README.md"


def identity_of(file_name: str) -> str:
    return re.sub(r"_\d+$", "", Path(file_name).stem)


def is_test_identity(identity: str) -> bool:
    return int(hashlib.sha1(identity.encode("utf-8")).hexdigest(), 16) % TEST_MODULUS == 0


def require_root(root: Path | None, subdir: str, files: tuple[str, ...], layout: str, source: str) -> Path:
    """The dataset folder (``root`` itself or ``root/<subdir>``) with every one of ``files``
    present (a trailing "/" = a folder), or one DataNotFoundError naming what is missing."""
    base = locate(root, subdir, (subdir,), files[0], layout, source)
    for name in files[1:]:
        require(base, name, layout, source)
    return base


class FacesWild(Dataset):
    SPLITS = {
        "fit": SplitInfo("fit", 2820, "method training and landmark-regression fit (282 identities)"),
        "test": SplitInfo("test", 642, "held-out identities (65 of 347)"),
    }

    def __init__(self, root: Path | None = None, image_size: int = 128, **options: Any) -> None:
        super().__init__(root, image_size, **options)
        self.base = require_root(root, SUBDIR, (LANDMARK_FILE, "images/train/"), LAYOUT, SOURCE)
        coords = [f"{n}_{a}" for n in LANDMARK_NAMES for a in "xy"]
        # A truncated row, a non-number or a path leaving the folder fails naming the file and line.
        manifest = read_manifest(self.base / LANDMARK_FILE, ("file", "width", "height", *coords),
                                 numbers=("width", "height", *coords), paths=("file",))
        self.manifest = manifest
        self.rows = manifest.rows
        self.landmarks = np.array([[float(r[c]) for c in coords] for r in self.rows], np.float32).reshape(-1, 5, 2)
        self.sizes = np.array([[float(r["width"]), float(r["height"])] for r in self.rows], np.float32).reshape(-1, 2)
        small = np.flatnonzero((self.sizes <= 0).any(axis=1))
        if small.size:
            raise DataFormatError(f"{manifest.where(int(small[0]))}: width and height must be > 0")
        self.is_test = np.array([is_test_identity(identity_of(r["file"])) for r in self.rows], bool)
        self._counts_checked: set[str] = set()

    def _split(self, name: str) -> ImageFileSplit:
        rows = np.flatnonzero(self.is_test == (name == "test"))
        if name not in self._counts_checked:  # once per dataset object
            self._counts_checked.add(name)
            check_count(f"faces_wild split {name!r} ({LANDMARK_FILE})", len(rows), self.SPLITS[name].expected_size)
        scale = self.image_size / self.sizes  # per image (sx, sy)

        def annotate(i: int) -> dict[str, Any]:
            r = rows[i]
            height, width = image_hw(self.base / self.rows[r]["file"])
            if (width, height) != tuple(self.sizes[r]):  # the landmarks are pixels of the listed size
                raise DataFormatError(f"{self.base / self.rows[r]['file']} is {height}x{width} (HxW) but "
                                      f"{self.manifest.where(int(r))} says {self.sizes[r][1]:g}x{self.sizes[r][0]:g}; "
                                      "its landmarks would be mis-scaled")
            points = self.landmarks[r] * scale[r]
            return {"landmarks": points, "landmark_visible": np.ones(len(points), bool),
                    "ref_length": np.float32(np.linalg.norm(points[0] - points[1]))}

        paths = [self.base / self.rows[r]["file"] for r in rows]
        return ImageFileSplit(name, paths, self.image_size, annotate, root=self.base)
