"""``pascal_s``: the 850 PASCAL-S salient-object images (Li et al., CVPR 2014) from
``../shared/data/pascal_s`` (see its README).

Masks are graded (share of 12 annotators); the binary ground truth is mask >= 128 (at least 6 of
12 annotators). ``image(i)`` is the whole image resized to ``image_size``; ``full_image(i)`` and
the annotation ``fg_mask_full`` (bool, stored resolution) let protocols build the crop/resize
view of each foreground-IoU variant. There is one split, ``all``: an unsupervised method may fit
on the same images it is scored on (no labels are used), which the protocol record says.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from segbench.benchmark.errors import UserError
from segbench.datasets.base import Dataset, SplitInfo
from segbench.datasets.faces_wild import require_root
from segbench.datasets.image_files import ImageFileSplit, check_same_size, to_8bit
from segbench.datasets.list_files import read_manifest
from segbench.datasets.realformat import check_count

SUBDIR = "pascal_s"
MASK_THRESHOLD = 128  # >= 6 of 12 annotators
LAYOUT = f"<data-root>/{SUBDIR}/manifest.csv (id,image,mask,width,height), images/<id>.jpg, masks/<id>.png"
SOURCE = "PASCAL-S (Li, Hou, Koch, Rehg, Yuille, CVPR 2014), as in ../shared/data/README.md"


def binary_mask(path: Path) -> np.ndarray:
    """bool [H, W]: the grey mask (16-bit scaled to 8 bits, float refused) >= 128."""
    try:
        with Image.open(path) as im:
            return np.asarray(to_8bit(im, Path(path)).convert("L")) >= MASK_THRESHOLD
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot decode mask {path}: {exc}") from None


class PascalS(Dataset):
    SPLITS = {"all": SplitInfo("all", 850, "all images: unsupervised fitting and scoring")}

    def __init__(self, root: Path | None = None, image_size: int = 128, **options: Any) -> None:
        super().__init__(root, image_size, **options)
        self.base = require_root(root, SUBDIR, ("manifest.csv", "images/", "masks/"), LAYOUT, SOURCE)
        # Rows are complete, numbers are numbers and paths stay inside the folder (one line naming
        # the manifest's row otherwise); a row count other than 850 is a CountMismatchWarning.
        self.manifest = read_manifest(self.base / "manifest.csv", ("id", "image", "mask", "width", "height"),
                                      numbers=("width", "height"), paths=("image", "mask"))
        self.rows = self.manifest.rows
        self._counts_checked = False

    def mask_full(self, i: int) -> np.ndarray:
        """Row ``i``'s binary mask at its stored size, which must be its image's (both files named)."""
        row = self.rows[i]
        mask_path, image_path = self.base / row["mask"], self.base / row["image"]
        mask = binary_mask(mask_path)
        check_same_size(mask, image_path, mask_path)
        return mask

    def _split(self, name: str) -> ImageFileSplit:
        if not self._counts_checked:
            self._counts_checked = True
            check_count(f"pascal_s split {name!r} ({self.manifest.path})", len(self.rows),
                        self.SPLITS[name].expected_size)

        def annotate(i: int) -> dict[str, Any]:
            return {"fg_mask_full": self.mask_full(i)}

        return ImageFileSplit(name, [self.base / r["image"] for r in self.rows], self.image_size, annotate,
                              root=self.base)
