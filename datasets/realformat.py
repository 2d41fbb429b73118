"""Shared machinery for loaders of the official on-disk layouts (CelebA, CUB, Flowers, Taichi).

What a loader gets from here:
- ``locate`` / ``require``: find the dataset folder under the data root and each file of the
  layout, or fail with ONE line naming the missing path, the expected layout and the source.
- ``read_name_list`` / ``read_table`` (``datasets/list_files.py``, re-exported): readers
  tolerant of the official list formats (an optional leading row count, an optional column-name
  line, whitespace columns); a truncated or malformed file fails with its path and line number.
- ``check_count``: a split whose size differs from the documented one is reported
  (``CountMismatchWarning`` + log line with both numbers), never silently accepted.
- ``decode_rgb``: a missing or corrupt image fails naming the file.
- ``ResizedCache`` (``datasets/resized_cache.py``, re-exported here): ``prepare`` stores each
  split's images, already resized, as one uint8 array ``<split>.npy`` [N, S, S, 3] plus
  ``manifest.json`` (count and SHA-1 of the split's file keys); loaders read it (memory-mapped)
  when its manifest matches the split, and decode files otherwise.
- ``RealFormatDataset``: a ``Dataset`` whose subclasses only say which files form each split and
  how to annotate them (``_build_members``); it adds ``verify()`` and ``prepare()``.
"""
from __future__ import annotations

import logging
import time
import warnings
from abc import abstractmethod
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Sequence

import numpy as np
from PIL import Image

from segbench.benchmark.errors import DataNotFoundError, UserError
from segbench.datasets.base import Dataset, FitImages, Split
from segbench.datasets.image_files import decode_rgb, resize_rgb  # noqa: F401 (decode_rgb re-exported)
from segbench.datasets.image_files import FileImages, MirroredImages
from segbench.datasets.list_files import (DataFormatError, Table, read_name_list,  # noqa: F401 (re-exported)
                                 read_table)
from segbench.datasets.resized_cache import CACHE_DIRNAME, ResizedCache, keys_digest  # noqa: F401 (re-exported)

log = logging.getLogger("segbench")

PREPARE_CHUNK = 256  # images decoded per batch of worker tasks


class CountMismatchWarning(UserWarning):
    """A split's image count differs from the documented size."""


# --------------------------------------------------------------------------- presence

def _alternatives(relpath: str | Sequence[str]) -> list[str]:
    return [relpath] if isinstance(relpath, str) else list(relpath)


def no_root_error(dataset: str, layout: str, source: str) -> DataNotFoundError:
    return DataNotFoundError(f"{dataset}: no data root; pass --data-root DIR or set $SEGBENCH_DATA "
                             f"(expected layout: {layout}; source: {source})")


def locate(root: Path | None, dataset: str, subdirs: Sequence[str], marker: str | Sequence[str],
           layout: str, source: str) -> Path:
    """The folder holding a dataset: ``root`` itself or ``root/<subdir>``, the first containing one
    of ``marker`` (so ``--data-root`` may name the dataset folder or a parent of several)."""
    if root is None:
        raise no_root_error(dataset, layout, source)
    root = Path(root)
    markers = _alternatives(marker)
    candidates = [root] + [root / s for s in subdirs]
    for folder in candidates:
        if any((folder / m).exists() for m in markers):
            return folder
    looked = ", ".join(str(c) for c in candidates)
    raise DataNotFoundError(f"{dataset}: {markers[0]} not found (looked in {looked}); "
                            f"expected layout: {layout}; source: {source}")


def require(root: Path | None, relpath: str | Sequence[str], layout_hint: str, source: str) -> Path:
    """``root/relpath`` (the first existing of several alternatives), or one DataNotFoundError
    naming it. A relpath ending in "/" must be a folder."""
    if root is None:
        raise no_root_error("dataset", layout_hint, source)
    options = _alternatives(relpath)
    for rel in options:
        path = Path(root) / rel
        if path.is_dir() if rel.endswith("/") else path.is_file():
            return path
    also = f" (or {', '.join(options[1:])})" if len(options) > 1 else ""
    kind = "folder" if options[0].endswith("/") else "file"
    raise DataNotFoundError(f"missing {kind} {Path(root) / options[0]}{also}; expected layout: {layout_hint}; "
                            f"source: {source}")


def check_count(what: str, found: int, expected: int) -> bool:
    """True when ``found == expected``; otherwise a CountMismatchWarning and a log line with both."""
    if found == expected:
        return True
    message = (f"{what}: found {found:,} images, the documented size is {expected:,} "
               "(incomplete copy or different list files?)")
    if log.hasHandlers():  # a run's log.txt; on a bare console the warning alone is enough
        log.warning(message)
    warnings.warn(message, CountMismatchWarning, stacklevel=2)
    return False


# --------------------------------------------------------------------------- images

# --------------------------------------------------------------------------- splits and datasets

Annotate = Callable[[int], dict[str, Any]]


class FolderFiles(Sequence[Path]):
    """``folder / names[i]`` made on access: 200k ``Path`` objects up front cost seconds."""

    def __init__(self, folder: Path, names: Sequence[str]) -> None:
        self.folder = Path(folder)
        self.names = names

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index):  # int -> Path, slice -> list[Path]
        if isinstance(index, slice):
            return [self.folder / n for n in self.names[index]]
        return self.folder / self.names[index]


@dataclass
class Members:
    """The files of one split: ``keys`` (stable names relative to the dataset folder, used for the
    cache fingerprint), ``paths`` to decode, and ``annotate(i)`` at the dataset's image size."""

    keys: Sequence[str]
    paths: Sequence[Path]  # a list, or FolderFiles for big splits
    annotate: Annotate | None = None

    def __post_init__(self) -> None:
        if len(self.keys) != len(self.paths):
            raise ValueError("keys and paths differ in length")

    def __len__(self) -> int:
        return len(self.paths)


class RealFormatSplit(Split):
    """Images from the resized cache when present, else decoded from files. ``fit_mirror``
    doubles the fit view (items N..2N-1 are the mirrored images): horizontal-flip augmentation
    without random state, so resumed training sees the same data. Image ids are the members'
    keys (the file names the cache manifest is keyed on)."""

    def __init__(self, name: str, members: Members, load_image: Callable[[Path], np.ndarray],
                 cached: np.ndarray | None = None, fit_mirror: bool = False, *, image_size: int) -> None:
        super().__init__(name, len(members))
        self.members = members
        self.paths = members.paths
        self._load_image = load_image
        self.cached = cached
        self.fit_mirror = fit_mirror
        self.image_size = image_size

    def image(self, index: int) -> np.ndarray:
        if self.cached is not None:
            return np.array(self.cached[index])  # a writable copy, not a view of the memmap
        return self._load_image(self.paths[index])

    def annotation(self, index: int) -> dict[str, Any]:
        return self.members.annotate(index) if self.members.annotate else {}

    def image_id(self, index: int) -> str:
        return str(self.members.keys[index])

    def fit_loader(self) -> Callable[[int], np.ndarray]:
        """The label-free loader of this split's images (paths and cached pixels only)."""
        return FileImages(self.paths, self.image_size, self.cached)

    def fit_images(self) -> FitImages:
        n = len(self)
        if not self.fit_mirror:
            return FitImages(n, self.fit_loader())
        return FitImages(2 * n, MirroredImages(self.fit_loader(), n))


class RealFormatDataset(Dataset):
    """Base of the official-layout loaders. Subclasses set ``NAME`` (registry name), ``LAYOUT``
    and ``SOURCE`` (for error messages) and ``SPLITS``, find their folder in ``__init__`` (set
    ``self.base``, usually with ``locate``) and implement ``_build_members(split)``; optional hooks:
    ``check_decoded``, ``expected_size``, ``fit_split_name``. Options: ``use_cache`` (default True;
    read the ``prepare`` cache when it matches), ``fit_mirror`` (default False; doubles the fit
    split with mirrored images — methods that flip on their own, like GANSeg, leave it off)."""

    NAME: ClassVar[str]
    LAYOUT: ClassVar[str]
    SOURCE: ClassVar[str]
    DEFAULT_IMAGE_SIZE: ClassVar[int] = 128  # what `prepare` caches unless told otherwise

    def __init__(self, root: Path | None = None, image_size: int = 128, **options: Any) -> None:
        if root is None:
            raise no_root_error(self.NAME, self.LAYOUT, self.SOURCE)
        super().__init__(root, image_size, **options)
        self.use_cache = bool(options.get("use_cache", True))
        self.fit_mirror = bool(options.get("fit_mirror", False))
        self.base: Path = Path(root)
        self._members: dict[str, Members] = {}
        self._counts_checked: set[str] = set()

    # -- subclass hooks
    @abstractmethod
    def _build_members(self, split: str) -> Members:
        ...

    def check_decoded(self, path: Path, image: np.ndarray) -> None:
        """Raise DataFormatError when a decoded image contradicts the annotations (e.g. its size)."""

    def expected_size(self, split: str) -> int:
        return self.SPLITS[split].expected_size

    # -- shared behaviour
    def members(self, split: str) -> Members:
        if split not in self._members:
            self._members[split] = self._build_members(split)
        return self._members[split]

    def load_image(self, path: Path) -> np.ndarray:
        image = decode_rgb(path)
        self.check_decoded(path, image)
        resized = resize_rgb(image, self.image_size)
        return resized if resized.flags.writeable else resized.copy()  # torch wants writable arrays

    @property
    def cache(self) -> ResizedCache:
        return ResizedCache(self.base, self.NAME, self.image_size)

    def _split(self, name: str) -> RealFormatSplit:
        members = self.members(name)
        if name not in self._counts_checked:  # once per dataset object, not at every split() call
            self._counts_checked.add(name)
            check_count(f"{self.NAME} split {name!r}", len(members), self.expected_size(name))
        cached = self.cache.find(name, keys_digest(members.keys), len(members)) if self.use_cache else None
        return RealFormatSplit(name, members, self.load_image, cached,
                               fit_mirror=self.fit_mirror and name == self.fit_split_name(),
                               image_size=self.image_size)

    def fit_split_name(self) -> str:
        """The split the mirror augmentation applies to (evaluation splits are never mirrored)."""
        return "train"

    def describe(self) -> dict[str, Any]:
        """Provenance: the folder used, each split's size against the documented one, and the
        cache file each split is read from (None: decoded from the image files)."""
        sizes, cached = {}, {}
        for name in self.SPLITS:
            members = self.members(name)
            sizes[name] = {"found": len(members), "expected": self.expected_size(name)}
            hit = self.cache.entry(name, keys_digest(members.keys), len(members)) if self.use_cache else None
            cached[name] = str(hit[0]) if hit else None
        return {**super().describe(), "base": str(self.base), "split_sizes": sizes, "cache": cached}

    def verify(self, n_decode: int = 3) -> dict[str, Any]:
        """Presence (the constructor already checked it), counts per split against the documented
        sizes, ``n_decode`` decodes per split (first, middle, last) and the cache state."""
        report: dict[str, Any] = {"dataset": self.NAME, "base": str(self.base), "image_size": self.image_size,
                                  "splits": {}, "decoded": 0}
        cache = self.cache
        for name in self.SPLITS:
            members = self.members(name)
            n, expected = len(members), self.expected_size(name)
            picks = sorted({0, n // 2, n - 1})[:n_decode] if n else []
            for i in picks:
                self.load_image(members.paths[i])
            report["decoded"] += len(picks)
            hit = cache.entry(name, keys_digest(members.keys), n)
            report["splits"][name] = {"found": n, "expected": expected, "count_ok": n == expected,
                                      "cache": str(hit[0]) if hit else None}
        return report

    def prepare(self, splits: Sequence[str] | None = None, *, force: bool = False, workers: int = 1,
                progress: bool = False) -> dict[str, Any]:
        """Decode every image of ``splits`` (all by default) and store them resized in the cache.
        A split whose cache entry already matches is left alone (re-running is a no-op)."""
        from tqdm import tqdm

        cache, report = self.cache, {}
        for name in splits or list(self.SPLITS):
            if name not in self.SPLITS:
                raise UserError(f"{self.NAME} has no split {name!r}; splits: {', '.join(self.SPLITS)}")
            members = self.members(name)
            digest, n = keys_digest(members.keys), len(members)
            hit = cache.entry(name, digest, n)
            if hit and not force:
                report[name] = {"action": "up to date", "path": str(hit[0]), "count": n}
                continue
            t0 = time.perf_counter()

            def images(paths=members.paths, desc=name):
                with ThreadPoolExecutor(max(1, workers)) as pool, \
                        tqdm(total=len(paths), desc=desc, unit="img", disable=not progress) as bar:
                    for start in range(0, len(paths), PREPARE_CHUNK):
                        for image in pool.map(self.load_image, paths[start:start + PREPARE_CHUNK]):
                            bar.update()
                            yield image

            path = cache.write(name, digest, n, images, {"source": str(self.base), "dataset": self.NAME,
                                                         "expected": self.expected_size(name)})
            report[name] = {"action": "cached", "path": str(path), "count": n,
                            "seconds": round(time.perf_counter() - t0, 2)}
        return report
