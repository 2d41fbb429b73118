"""Accumulators: batched updates equal one update with everything (numpy reference)."""
import numpy as np
import pytest
import torch

from segbench.protocols.metrics.accumulate import ConcatAccumulator, MeanAccumulator


def test_mean_accumulator_batched_equals_numpy_mean():
    values = np.random.default_rng(0).random(37)
    acc = MeanAccumulator()
    acc.update(values[:10])
    acc.update(torch.from_numpy(values[10:30]))
    acc.update(values[30])
    acc.update(values[31:])
    assert acc.compute() == pytest.approx(values.mean(), rel=1e-12)
    with pytest.raises(ValueError):
        MeanAccumulator().compute()


def test_concat_accumulator_keeps_order():
    rows = np.arange(24.0).reshape(8, 3)
    acc = ConcatAccumulator()
    acc.update(rows[:3])
    acc.update(torch.from_numpy(rows[3:]))
    assert len(acc) == 8
    np.testing.assert_array_equal(acc.compute(), rows)
