"""Taichi MAE against motion-cosegmentation's regress_keypoints loop with sklearn (REFERENCE 1.3)."""
import numpy as np
import pytest
from sklearn.linear_model import LinearRegression

from segbench.protocols.metrics.taichi import taichi_mae


def _reference_mae(fit_x, fit_kp, test_x, test_kp):
    """motion-cosegmentation evaluate.py regress_keypoints, written out."""
    scores = []
    for i in range(fit_kp.shape[1]):
        for j in range(2):
            index = fit_kp[:, i, j] != -1
            reg = LinearRegression().fit(fit_x[index], fit_kp[index, i, j])
            index_test = test_kp[:, i, j] != -1
            scores.append(np.mean(np.abs(reg.predict(test_x[index_test]) - test_kp[index_test, i, j])))
    return float(np.sum(scores))


def _taichi(n, seed):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 256, size=(n, 20))
    kp = (x @ rng.normal(size=(20, 36)) * 0.05 + 128 + 5 * rng.normal(size=(n, 36))).reshape(n, 18, 2)
    kp[rng.random((n, 18, 2)) < 0.2] = -1  # missing values, per coordinate
    return x, kp


def test_taichi_mae_matches_sklearn_loop_with_missing_values():
    fit_x, fit_kp = _taichi(200, 0)
    test_x, test_kp = _taichi(50, 1)
    assert taichi_mae(fit_x, fit_kp, test_x, test_kp) == pytest.approx(
        _reference_mae(fit_x, fit_kp, test_x, test_kp), rel=1e-9)


def test_taichi_mae_golden_exact_affine_targets_and_constant_offset():
    """Golden: targets an exact affine function of the features -> 0; shifting one test target by
    +3 on 2 of its 4 present rows adds 3 * 2 / 4 = 1.5 (a sum of per-axis MAEs, not of L2)."""
    rng = np.random.default_rng(2)
    x = rng.normal(size=(30, 4))
    kp = (x @ rng.normal(size=(4, 36)) + 7).reshape(30, 18, 2)
    test_x, test_kp = x[:5].copy(), kp[:5].copy()
    test_kp[4, 0, 0] = -1  # missing in one coordinate only; its y still counts
    assert taichi_mae(x, kp, test_x, test_kp) == pytest.approx(0.0, abs=1e-8)
    test_kp[0, 0, 0] += 3
    test_kp[1, 0, 0] += 3
    assert taichi_mae(x, kp, test_x, test_kp) == pytest.approx(1.5, abs=1e-8)


def test_taichi_target_missing_in_all_fit_rows_raises():
    fit_x, fit_kp = _taichi(40, 3)
    fit_kp[:, 5, 1] = -1
    with pytest.raises(ValueError):
        taichi_mae(fit_x, fit_kp, fit_x, np.abs(fit_kp) + 1)
