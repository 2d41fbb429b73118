"""The one batch loop of the protocols: consecutive index ranges over a split (with a progress
bar), the method's predictions on each, and per-image rows collected across batches
(sufficient statistics, never whole arrays of probabilities)."""
from __future__ import annotations

from typing import Any, Callable, Iterator, Mapping

import numpy as np
from tqdm import tqdm

from segbench.protocols.metrics.accumulate import RowAccumulator

RowsOf = Callable[[dict[str, Any], np.ndarray], Mapping[str, Any]]  # (batch, probs) -> columns


def batch_ranges(length: int, batch_size: int, *, progress: bool = False, desc: str = "test") -> Iterator[range]:
    """Index ranges of at most ``batch_size`` covering ``0 .. length - 1`` in order."""
    total = (length + batch_size - 1) // batch_size
    for start in tqdm(range(0, length, batch_size), total=total, desc=desc, unit="batch", disable=not progress,
                      leave=False):
        yield range(start, min(start + batch_size, length))


def predicted_batches(method: Any, split: Any, *, batch_size: int, progress: bool,
                      desc: str) -> Iterator[tuple[dict[str, Any], np.ndarray]]:
    """(``split.batch`` of the range, part_probs as numpy [B, K+1, H, W]) over ``split`` in index order."""
    for indices in batch_ranges(len(split), batch_size, progress=progress, desc=desc):
        batch = split.batch(indices)
        yield batch, method.predict(batch["images"]).part_probs.numpy()


def collect_rows(method: Any, split: Any, rows_of: RowsOf, *, batch_size: int, progress: bool,
                 desc: str) -> RowAccumulator:
    """The columns ``rows_of(batch, probs)`` returns, stacked over the whole split."""
    rows = RowAccumulator()
    for batch, probs in predicted_batches(method, split, batch_size=batch_size, progress=progress, desc=desc):
        rows.add(**rows_of(batch, probs))
    return rows


def image_ids(split: Any, indices: Any = None) -> list[str]:
    """``split.image_id(i)`` of ``indices`` (default: every item); ``str(i)`` for a split that has
    no ``image_id`` (a duck-typed split in a test or a plugin)."""
    indices = range(len(split)) if indices is None else indices
    image_id = getattr(split, "image_id", str)
    return [image_id(int(i)) for i in indices]
