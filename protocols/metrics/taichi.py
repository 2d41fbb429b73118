"""Taichi keypoint MAE (REFERENCE 1.3): 36 per-axis OLS fits, summed mean absolute errors."""
from __future__ import annotations

from typing import Any

import numpy as np

from segbench.protocols.metrics._arrays import to_numpy

MISSING = -1.0
MISSING_ATOL = 1e-6  # GANSeg tests (y + 1).abs() > 1e-6; motion-cosegmentation y != -1


def fit_ols_with_intercept(features: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, float]:
    """Ordinary least squares with an intercept, as sklearn ``LinearRegression()`` computes it:
    centre X and y, minimum-norm ``lstsq`` for the slopes, intercept = mean(y) - mean(X) @ slopes."""
    x_mean, y_mean = features.mean(axis=0), target.mean()
    slopes = np.linalg.lstsq(features - x_mean, target - y_mean, rcond=None)[0]
    return slopes, float(y_mean - x_mean @ slopes)


def _present(values: np.ndarray) -> np.ndarray:
    return np.abs(values - MISSING) > MISSING_ATOL


def taichi_mae(fit_features: Any, fit_keypoints: Any, test_features: Any, test_keypoints: Any) -> float:
    """Sum over the 36 (keypoint, axis) targets of the test mean absolute error, in keypoint units.

    Reproduces motion-cosegmentation ``evaluate.py:86-121`` (``regress_keypoints``) and GANSeg
    ``test_seg.py:108-131``: for each keypoint k and axis a separately, fit OLS WITH an intercept
    from all features ([N, F], e.g. the flattened 2K part centres) to keypoint[:, k, a] on the fit
    images where that value is not -1, predict the test images where that value is not -1, take the
    mean absolute error; return the sum (not a sum of L2 distances). Keypoints are [N, 18, 2] in the
    units the score is reported in (pixels at 256 px). Missing is decided per target value, so an x
    can be used while its y is missing. A target with no present test value is skipped (the
    references would return NaN); one with test values but no fit values raises.
    Tested against a hand loop with sklearn ``LinearRegression`` (tests/metrics/test_taichi.py).
    """
    fit_x, test_x = to_numpy(fit_features, np.float64), to_numpy(test_features, np.float64)
    fit_kp, test_kp = to_numpy(fit_keypoints, np.float64), to_numpy(test_keypoints, np.float64)
    if fit_kp.ndim != 3 or test_kp.shape[1:] != fit_kp.shape[1:] or fit_kp.shape[2] != 2:
        raise ValueError(f"keypoints must be [N, L, 2] alike, got {fit_kp.shape} and {test_kp.shape}")
    total = 0.0
    for keypoint in range(fit_kp.shape[1]):
        for axis in range(2):
            fit_rows, test_rows = _present(fit_kp[:, keypoint, axis]), _present(test_kp[:, keypoint, axis])
            if not test_rows.any():
                continue
            if not fit_rows.any():
                raise ValueError(f"keypoint {keypoint} axis {axis} is missing in every fit image")
            slopes, intercept = fit_ols_with_intercept(fit_x[fit_rows], fit_kp[fit_rows, keypoint, axis])
            pred = test_x[test_rows] @ slopes + intercept
            total += float(np.abs(pred - test_kp[test_rows, keypoint, axis]).mean())
    return total
