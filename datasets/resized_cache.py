"""The resized cache of the official-layout loaders (``python -m benchmark prepare`` writes it).

Each split's images, already resized, are one uint8 array ``<split>.npy`` [N, S, S, 3] beside a
``manifest.json`` holding, per split, the count and the SHA-1 of the split's file keys. A loader
memory-maps an entry only when both match the split it is building; otherwise it decodes files.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from segbench.benchmark.errors import UserError
from segbench.datasets.paths import cache_dir

log = logging.getLogger("segbench")

CACHE_DIRNAME = ".segbench_cache"  # inside the dataset folder when writable
CACHE_FORMAT = 1


def keys_digest(keys: Sequence[str]) -> str:
    return hashlib.sha1("\n".join(keys).encode("utf-8")).hexdigest()


class ResizedCache:
    """Per-split uint8 arrays at one image size, with a manifest saying what they hold.

    Looked for first in ``<dataset folder>/.segbench_cache/<dataset>_<size>px/`` and then in
    ``$SEGBENCH_CACHE/realformat/<hash of the folder path>/...`` (for read-only data roots).
    An entry is used only when its count and the SHA-1 of the split's file keys match; images
    whose content changed under the same names need ``prepare --force``.
    """

    def __init__(self, base: Path, dataset: str, image_size: int) -> None:
        self.name = f"{dataset}_{image_size}px"
        self.image_size = image_size
        folder_key = hashlib.sha1(str(Path(base).resolve()).encode("utf-8")).hexdigest()[:12]
        self.locations = [Path(base) / CACHE_DIRNAME / self.name,
                          cache_dir() / "realformat" / folder_key / self.name]

    @staticmethod
    def _manifest(location: Path) -> dict[str, Any]:
        try:
            manifest = json.loads((location / "manifest.json").read_text())
        except (OSError, ValueError):
            return {}
        return manifest if manifest.get("format") == CACHE_FORMAT else {}

    def entry(self, split: str, digest: str, count: int) -> tuple[Path, dict] | None:
        for location in self.locations:
            item = self._manifest(location).get("splits", {}).get(split)
            if (item and item.get("keys_sha1") == digest and item.get("count") == count
                    and (location / item["file"]).is_file()):
                return location / item["file"], item
        return None

    def find(self, split: str, digest: str, count: int) -> np.ndarray | None:
        """The cached images of ``split`` (memory-mapped, read-only) or None."""
        hit = self.entry(split, digest, count)
        if hit is None:
            return None
        try:
            array = np.load(hit[0], mmap_mode="r")
        except ValueError:  # numpy cannot memory-map an empty array
            array = np.load(hit[0])
        expected = (count, self.image_size, self.image_size, 3)
        if array.shape != expected or array.dtype != np.uint8:
            log.warning("ignoring cache %s: shape %s, expected %s", hit[0], array.shape, expected)
            return None
        return array

    def writable_location(self) -> Path:
        for location in self.locations:
            try:
                location.mkdir(parents=True, exist_ok=True)
                probe = location / ".write_test"
                probe.write_text("")
                probe.unlink()
                return location
            except OSError:
                continue
        raise UserError(f"cannot write the resized cache to {' or '.join(map(str, self.locations))}; "
                        "make one writable or set $SEGBENCH_CACHE")

    def write(self, split: str, digest: str, count: int, images: Callable[[], Any],
              info: dict[str, Any]) -> Path:
        """Store ``count`` images from the iterator ``images()`` as ``<split>.npy`` (atomically)."""
        location = self.writable_location()
        final, partial = location / f"{split}.npy", location / f"{split}.npy.partial"
        shape = (count, self.image_size, self.image_size, 3)
        if count == 0:  # an empty array cannot be memory-mapped
            with open(partial, "wb") as fh:
                np.save(fh, np.zeros(shape, np.uint8))
        else:
            array = np.lib.format.open_memmap(partial, mode="w+", dtype=np.uint8, shape=shape)
            filled = 0
            try:
                for image in images():
                    array[filled] = image
                    filled += 1
            except BaseException:  # a corrupt image, Ctrl-C: leave no half-written file behind
                del array
                partial.unlink(missing_ok=True)
                raise
            if filled != count:
                raise RuntimeError(f"cache writer got {filled} images for {count} keys")
            array.flush()
            del array
        os.replace(partial, final)
        manifest = self._manifest(location) or {"format": CACHE_FORMAT, "cache": self.name, "splits": {}}
        manifest["splits"][split] = {"file": final.name, "count": count, "keys_sha1": digest,
                                     "shape": list(shape), "created": time.strftime("%Y-%m-%dT%H:%M:%S"), **info}
        tmp = location / "manifest.json.partial"
        tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True))
        os.replace(tmp, location / "manifest.json")
        return final
