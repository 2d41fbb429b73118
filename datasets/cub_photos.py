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
from segbench.datasets.list_files import inside_path
from segbench.datasets.realformat import check_count

SUBDIR = "cub_birds_5902"
LAYOUT = (f"<data-root>/{SUBDIR}/images.txt ('<id>, <path>'), train_test_split.txt ('<id>, 0|1'), "
          "images/<Species>/<nnnn>.jpg")
SOURCE = "a 100-species subset of CUB-200-2011 (Wah et al. 2011), as in ../shared/data/README.md"


def read_comma_list(path: Path, value_is_path: bool = False) -> list[tuple[str, str]]:
    """Lines ``<id>, <value>`` (comma-space separated); ``value_is_path``: the value must be a path
    inside the dataset folder (``inside_path``). A bad line fails naming the file and line."""
    pairs = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            parts = [p.strip() for p in line.split(",", 1)]
            if len(parts) != 2 or not parts[0] or not parts[1]:
                raise UserError(f"{path}:{n}: expected '<id>, <value>', got {line!r}")
            if value_is_path:
                parts[1] = inside_path(parts[1], f"{path}:{n}")
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
        self.paths = dict(read_comma_list(self.base / "images.txt", value_is_path=True))
        split_file = self.base / "train_test_split.txt"
        flags = read_comma_list(split_file)
        bad = next(((i, f) for i, f in flags if f not in ("0", "1")), None)
        if bad:
            raise UserError(f"{split_file}: flag {bad[1]!r} for image {bad[0]}; flags are 0 or 1")
        self.is_train = {i: flag == "1" for i, flag in flags}
        unlisted = [i for i in self.paths if i not in self.is_train]
        if unlisted:
            raise UserError(f"{split_file} has no flag for image {unlisted[0]} of images.txt ({len(unlisted)} of "
                            f"{len(self.paths)} missing; truncated?)")
        self._counts_checked: set[str] = set()

    def _split(self, name: str) -> ImageFileSplit:
        ids = [i for i in self.paths if name == "all" or self.is_train[i] == (name == "train")]
        if name not in self._counts_checked:  # once per dataset object
            self._counts_checked.add(name)
            check_count(f"cub_photos split {name!r}", len(ids), self.SPLITS[name].expected_size)
        return ImageFileSplit(name, [self.base / "images" / self.paths[i] for i in ids], self.image_size,
                              root=self.base)
