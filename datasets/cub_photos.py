"""``cub_photos``: 5,902 real CUB-200-2011 bird photos (100 species, 128x128, no masks) from
``../shared/data/cub_birds_5902`` (see its README): for GAN training on real birds and
real-image FID statistics. Splits: ``all`` (5,902) and the course's own ``train`` / ``test`` from
``train_test_split.txt`` (``<id>, <is training?>``). The flag marks 2,903 images as training and
2,999 as test, the reverse of the counts the package's README.txt states; we follow the flags.
The photos cannot be matched to CUB ids, masks or part locations.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from segbench.benchmark.errors import UserError
from segbench.datasets.base import Dataset, SplitInfo
from segbench.datasets.faces_wild import require_root
from segbench.datasets.image_files import ImageFileSplit

SUBDIR = "cub_birds_5902"
LAYOUT = (f"<data-root>/{SUBDIR}/images.txt ('<id>, <path>'), train_test_split.txt ('<id>, 0|1'), "
          "images/<Species>/<nnnn>.jpg")
SOURCE = "a 100-species subset of CUB-200-2011 (Wah et al. 2011), as in ../shared/data/README.md"


def read_comma_list(path: Path) -> list[tuple[str, str]]:
    """Lines ``<id>, <value>`` (comma-space separated)."""
    pairs = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            parts = [p.strip() for p in line.split(",", 1)]
            if len(parts) != 2:
                raise UserError(f"{path}:{n}: expected '<id>, <value>', got {line!r}")
            pairs.append((parts[0], parts[1]))
    return pairs


class CubPhotos(Dataset):
    SPLITS = {
        "all": SplitInfo("all", 5902, "every photo"),
        "train": SplitInfo("train", 2903, "flag 1 in train_test_split.txt"),
        "test": SplitInfo("test", 2999, "flag 0 in train_test_split.txt"),
    }

    def __init__(self, root: Path | None = None, image_size: int = 128, **options: Any) -> None:
        super().__init__(root, image_size, **options)
        self.base = require_root(root, SUBDIR, ("images.txt", "train_test_split.txt", "images/"), LAYOUT, SOURCE)
        self.paths = dict(read_comma_list(self.base / "images.txt"))
        self.is_train = {i: flag == "1" for i, flag in read_comma_list(self.base / "train_test_split.txt")}

    def _split(self, name: str) -> ImageFileSplit:
        ids = [i for i in self.paths if name == "all" or self.is_train[i] == (name == "train")]
        return ImageFileSplit(name, [self.base / "images" / self.paths[i] for i in ids], self.image_size,
                              root=self.base)
