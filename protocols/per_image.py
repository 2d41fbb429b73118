"""The per-image score file of a run directory: ``scores_per_image.csv.gz`` (``rescore`` writes
``scores_per_image_rescored.csv.gz``), one row per (split, image, metric) for the metrics that are
plain means over images, columns exactly ``split,image_id,metric,value``; ``metric`` is the
metric's name in ``metrics.json`` and the mean of its values is the value there. ``tables --ci``
pairs images across runs by ``image_id`` (``Split.image_id``).
"""
from __future__ import annotations

import csv
import gzip
import io
import os
import tempfile
from pathlib import Path
from typing import Iterable

PER_IMAGE_FILE = "scores_per_image.csv.gz"
PER_IMAGE_RESCORED_FILE = "scores_per_image_rescored.csv.gz"
PER_IMAGE_COLUMNS = ("split", "image_id", "metric", "value")


def write_per_image_scores(path: Path, rows: Iterable[tuple[str, str, str, float]]) -> Path:
    """Write ``rows`` (split, image_id, metric, value) to ``path`` atomically: a temporary file in
    the same folder, then ``os.replace``, so a reader never sees half a file. Values are written
    with ``repr`` (exact round trip); gzip's header time is fixed at 0 so equal scores give equal
    bytes."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    try:
        with os.fdopen(fd, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz, \
                io.TextIOWrapper(gz, encoding="utf-8", newline="") as text:
            writer = csv.writer(text, lineterminator="\n")
            writer.writerow(PER_IMAGE_COLUMNS)
            writer.writerows((split, image_id, metric, repr(float(value))) for split, image_id, metric, value in rows)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_per_image_scores(path: Path) -> list[tuple[str, str, str, float]]:
    """The rows of a per-image score file (a check of the format; ``tables --ci`` reads with pandas)."""
    with gzip.open(path, "rt", encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        if tuple(header) != PER_IMAGE_COLUMNS:
            raise ValueError(f"{path}: columns {header}, expected {list(PER_IMAGE_COLUMNS)}")
        return [(split, image_id, metric, float(value)) for split, image_id, metric, value in reader]
