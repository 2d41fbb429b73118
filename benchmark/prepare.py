"""``python -m benchmark prepare DATASET --data-root DIR``: check a user's copy of an official
dataset (presence, counts per split against the documented sizes, a few decodes) and build the
resized cache its loader then reads. Re-running it is a no-op unless ``--force``."""
from __future__ import annotations

import warnings
from typing import Any, Callable, Sequence

from segbench.benchmark.errors import UserError


def prepare_dataset(name: str, data_root: str | None, *, image_size: int | None = None,
                    splits: Sequence[str] | None = None, force: bool = False, workers: int = 1,
                    verify_only: bool = False, progress: bool = True,
                    echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Verify, then cache; prints a summary through ``echo`` and returns both reports."""
    from segbench.datasets import DATASETS
    from segbench.datasets.paths import resolve_data_root
    from segbench.datasets.realformat import CountMismatchWarning, RealFormatDataset

    cls = DATASETS.get(name)
    if not (isinstance(cls, type) and issubclass(cls, RealFormatDataset)):
        raise UserError(f"{name} is not read from an official layout, nothing to prepare "
                        "(prepare is for celeba_wild, celeba_aligned and the other official-format datasets)")
    if image_size is not None and not (isinstance(image_size, int) and image_size >= 1):
        raise UserError(f"--image-size {image_size}: must be an integer >= 1 (pixels)")
    if not (isinstance(workers, int) and workers >= 1):
        raise UserError(f"--workers {workers}: must be an integer >= 1")
    unknown = [s for s in splits or () if s not in cls.SPLITS]
    if unknown:  # before the data is looked at: a typo costs nothing
        raise UserError(f"--split {unknown[0]}: {name} has no such split; splits: {', '.join(cls.SPLITS)}")
    root = resolve_data_root(data_root, name)
    size = image_size or cls.DEFAULT_IMAGE_SIZE
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CountMismatchWarning)  # the table below shows the counts
        dataset = cls(root=root, image_size=size)
        verified = dataset.verify()
    echo(f"{name}: {verified['base']} (cache at {size}px)")
    echo(f"  {'split':<16} {'found':>9} {'expected':>9}")
    mismatched = []
    for split, row in verified["splits"].items():
        flag = "" if row["count_ok"] else "  <- differs from the documented size"
        if row.get("unit"):  # a split counted in other units than images (Taichi: videos)
            flag = f"  ({row['unit']}; {row.get('frames', '?'):,} frames){flag}"
        if not row["count_ok"]:
            mismatched.append(split)
        echo(f"  {split:<16} {row['found']:>9,} {row['expected']:>9,}{flag}")
    echo(f"  decoded {verified['decoded']} images (first, middle, last of each split): ok")
    if mismatched:
        echo(f"warning: {name} split(s) {', '.join(mismatched)} differ from the documented sizes "
             "(incomplete copy or different list files?)")
    prepared: dict[str, Any] = {}
    if not verify_only:
        try:
            prepared = dataset.prepare(splits, force=force, workers=workers, progress=progress)
        except OSError as exc:  # a read-only cache folder, a full disk
            raise UserError(f"{name}: cannot write the resized cache ({exc.strerror or type(exc).__name__}: "
                            f"{exc.filename})") from None
        for split, row in prepared.items():
            if row["action"] == "up to date":
                echo(f"  cache {split}: up to date, nothing to do ({row['count']:,} images, {row['path']})")
            else:
                echo(f"  cache {split}: wrote {row['count']:,} images in {row['seconds']:.1f} s -> {row['path']}")
        if all(row["action"] == "up to date" for row in prepared.values()):
            echo("nothing to do: the cache already matches (use --force to rebuild)")
    return {"verify": verified, "prepare": prepared}


def default_workers() -> int:
    """Decode threads for ``prepare`` (PIL releases the GIL while decoding and resizing)."""
    import os
    return max(1, min(8, os.cpu_count() or 1))

