"""The one accumulator protocols use across batches: per-image rows (features, landmarks, IoUs,
...) under named columns, each stacked along axis 0 in arrival order (exact: concatenation)."""
from __future__ import annotations

from typing import Any

import numpy as np

from segbench.protocols.metrics._arrays import to_numpy


class ConcatAccumulator:
    """Per-image rows of one column stacked along axis 0 in arrival order."""

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


class RowAccumulator:
    """Named columns of per-image rows: ``add(features=..., landmarks=...)`` once per batch (every
    call with the same columns, each the batch's length), ``rows["features"]`` for the stack."""

    def __init__(self) -> None:
        self.columns: dict[str, ConcatAccumulator] = {}

    def add(self, **columns: Any) -> None:
        if self.columns and set(columns) != set(self.columns):
            raise ValueError(f"columns {sorted(columns)} differ from the first batch's {sorted(self.columns)}")
        lengths = {name: len(to_numpy(rows)) for name, rows in columns.items()}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"columns of one batch differ in length: {lengths}")
        for name, rows in columns.items():
            self.columns.setdefault(name, ConcatAccumulator()).update(rows)

    def __len__(self) -> int:
        return len(next(iter(self.columns.values()))) if self.columns else 0

    def __getitem__(self, name: str) -> np.ndarray:
        return self.columns[name].compute()
