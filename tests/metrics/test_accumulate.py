"""The row accumulator: batched updates equal one update with everything, in order."""
import numpy as np
import pytest
import torch

from segbench.protocols.metrics.accumulate import ConcatAccumulator, RowAccumulator


def test_concat_accumulator_keeps_order():
    rows = np.arange(24.0).reshape(8, 3)
    acc = ConcatAccumulator()
    acc.update(rows[:3])
    acc.update(torch.from_numpy(rows[3:]))
    assert len(acc) == 8
    np.testing.assert_array_equal(acc.compute(), rows)
    with pytest.raises(ValueError):
        ConcatAccumulator().compute()


def test_row_accumulator_stacks_named_columns_in_arrival_order():
    features, ious = np.arange(20.0).reshape(10, 2), np.linspace(0, 1, 10)
    rows = RowAccumulator()
    for start in (0, 4, 7):
        stop = {0: 4, 4: 7, 7: 10}[start]
        rows.add(features=features[start:stop], iou=torch.from_numpy(ious[start:stop]))
    assert len(rows) == 10
    np.testing.assert_array_equal(rows["features"], features)
    np.testing.assert_array_equal(rows["iou"], ious)
    with pytest.raises(ValueError, match="differ from the first batch"):
        rows.add(features=features[:1])
    with pytest.raises(ValueError, match="differ in length"):
        RowAccumulator().add(a=np.zeros(2), b=np.zeros(3))
