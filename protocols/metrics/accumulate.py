"""Tiny accumulators protocols use across batches (all exact: sums and concatenations)."""
from __future__ import annotations

from typing import Any

import numpy as np

from segbench.protocols.metrics._arrays import to_numpy


class MeanAccumulator:
    """Mean of every value seen: ``update(values)`` adds a scalar or an array of per-image values."""

    def __init__(self) -> None:
        self.sum, self.count = 0.0, 0

    def update(self, values: Any) -> None:
        v = to_numpy(values, np.float64).reshape(-1)
        self.sum += float(v.sum())
        self.count += v.size

    def compute(self) -> float:
        if self.count == 0:
            raise ValueError("no values were accumulated")
        return self.sum / self.count


class ConcatAccumulator:
    """Per-image rows (features, landmarks, IoUs) stacked along axis 0 in arrival order."""

    def __init__(self) -> None:
        self.chunks: list[np.ndarray] = []

    def update(self, rows: Any) -> None:
        self.chunks.append(to_numpy(rows))

    def __len__(self) -> int:
        return sum(len(c) for c in self.chunks)

    def compute(self) -> np.ndarray:
        if not self.chunks:
            raise ValueError("no rows were accumulated")
        return np.concatenate(self.chunks, axis=0)
