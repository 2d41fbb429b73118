"""Landmark regression from part centres (REFERENCE 1.2) in three named variants.

A protocol turns each batch of part probabilities into features with ``features_for_variant``,
collects them (``RowAccumulator``), and calls ``landmark_regression_error`` (faces: one joint
linear map; ``landmark_regression_errors`` gives its per-image values) or
``per_landmark_regression_error`` (CUB-style sets with invisible landmarks).
Landmarks are (x, y) = (column, row) pixel coordinates as in ``datasets.base``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from segbench.protocols.metrics._arrays import to_numpy
from segbench.protocols.metrics.centres import LIU_GRID_SIZE, part_centres, soft_argmax_centres_liu

REGRESSION_VARIANTS = ("no_intercept", "scops", "liu")
RIDGE_LAMBDA = 1.0  # GANSeg's fallback when X^T X cannot be inverted


@dataclass(frozen=True)
class LandmarkRegressor:
    """A fitted affine map ``features @ coef + intercept`` (intercept is zero without a bias)."""

    variant: str
    coef: np.ndarray  # [F, T]
    intercept: np.ndarray  # [T]
    ridge_used: bool = False

    def predict(self, features: Any) -> np.ndarray:
        return to_numpy(features, np.float64) @ self.coef + self.intercept


def _check_variant(variant: str) -> None:
    if variant not in REGRESSION_VARIANTS:
        raise ValueError(f"unknown regression variant {variant!r}; one of {', '.join(REGRESSION_VARIANTS)}")


def _is_constant(var: np.ndarray, mean: np.ndarray, n: int) -> np.ndarray:
    # sklearn's StandardScaler test: a variance within float rounding of zero means "constant".
    eps = np.finfo(np.float64).eps
    return var <= n * eps * var + (n * mean * eps) ** 2


def _standardise(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Column mean and scale as sklearn's StandardScaler: population std, 1 for constant columns."""
    mean, var = values.mean(axis=0), values.var(axis=0)
    scale = np.sqrt(var)
    scale[_is_constant(var, mean, len(values))] = 1.0
    return (values - mean) / scale, mean, scale


def fit_landmark_regressor(features: Any, targets: Any, variant: str) -> LandmarkRegressor:
    """Fit features [N, F] -> targets [N, T] by least squares as ``variant`` prescribes.

    - ``no_intercept`` (GANSeg ``test_seg.py:92-106``): beta = (X^T X)^-1 X^T Y, no bias. GANSeg
      falls back to ridge (X^T X + I)^-1 X^T Y when torch's ``inverse`` raises; we call X^T X
      singular when its numerical rank (``np.linalg.matrix_rank``, SVD with numpy's default
      tolerance) is below F, which also catches matrices singular up to round-off.
      Tested against sklearn ``LinearRegression(fit_intercept=False)`` and ``Ridge(alpha=1)``.
    - ``scops`` (SCOPS ``face_evaluation_wild.py:46-57``): standardise X and Y per column,
      minimum-norm least squares without bias (``LinearRegression(fit_intercept=False)`` is
      ``lstsq``), un-standardise; folded here into ``coef``/``intercept``. Equals OLS with an
      intercept. A zero-variance column gets scale 1 as in StandardScaler: its centred values are
      zero, so the minimum-norm solution gives it weight 0 (X) or predicts its mean (Y), never NaN.
      Tested against StandardScaler + LinearRegression and ``LinearRegression(fit_intercept=True)``.
    - ``liu`` (Liu et al. ``regression/scopsp_regression.py:139-142``): no bias, sklearn
      ``Ridge(alpha=0)``, i.e. least squares (minimum-norm ``lstsq`` if rank-deficient). The
      variant's other differences (features, [0, 1] targets) live in ``features_for_variant`` and
      ``landmark_regression_error``.
    """
    _check_variant(variant)
    x, y = to_numpy(features, np.float64), to_numpy(targets, np.float64)
    if x.ndim != 2 or y.ndim != 2 or len(x) != len(y) or len(x) == 0:
        raise ValueError(f"need features [N, F] and targets [N, T] with N >= 1, got {x.shape}, {y.shape}")
    zero_bias = np.zeros(y.shape[1])
    if variant == "no_intercept":
        gram = x.T @ x
        singular = np.linalg.matrix_rank(gram) < gram.shape[0]
        if singular:
            gram = gram + RIDGE_LAMBDA * np.eye(gram.shape[0])
        return LandmarkRegressor(variant, np.linalg.solve(gram, x.T @ y), zero_bias, bool(singular))
    if variant == "liu":
        return LandmarkRegressor(variant, np.linalg.lstsq(x, y, rcond=None)[0], zero_bias)
    x_std, x_mean, x_scale = _standardise(x)
    y_std, y_mean, y_scale = _standardise(y)
    beta = np.linalg.lstsq(x_std, y_std, rcond=None)[0]
    coef = beta / x_scale[:, None] * y_scale[None, :]
    return LandmarkRegressor(variant, coef, y_mean - x_mean @ coef)


def features_for_variant(part_probs: Any, variant: str, liu_grid: int = LIU_GRID_SIZE) -> np.ndarray:
    """Per-image regression features [B, F] from part probabilities [B, K+1, H, W].

    ``no_intercept``/``scops``: flattened ``part_centres`` (F = 2K, pixel units);
    ``liu``: flattened ``soft_argmax_centres_liu`` on a ``liu_grid`` map (F = 2(K+1), [0, 1] units;
    ``liu_grid`` = the method's native map side where it reports one). Shapes tested in
    tests/metrics/test_landmarks.py; the centres themselves in test_centres.py.
    """
    _check_variant(variant)
    centres = soft_argmax_centres_liu(part_probs, liu_grid) if variant == "liu" else part_centres(part_probs)
    return centres.reshape(len(centres), -1)


def inter_ocular_distance(landmarks: Any) -> np.ndarray:
    """||landmark 0 - landmark 1|| per image (the eyes in MAFL order): [N, L, 2] -> [N].
    REFERENCE 1.2 (GANSeg ``eye_distance``, SCOPS ``IOD``); golden value in test_landmarks.py."""
    lm = to_numpy(landmarks, np.float64)
    return np.linalg.norm(lm[:, 0] - lm[:, 1], axis=-1)


def normalised_landmark_error(pred: Any, true: Any, ref_length: Any, visible: Any = None) -> np.ndarray:
    """Per image: mean over (visible) landmarks of ||pred - true|| / ref_length -> [N].

    REFERENCE 1.2 (GANSeg ``test_seg.py:101-104``, SCOPS ``mean_error_IOD``). An image with no
    visible landmark gets NaN; a non-positive reference length raises (GANSeg would give inf,
    SCOPS silently 0). Golden values in tests/metrics/test_landmarks.py.
    """
    pred, true = to_numpy(pred, np.float64), to_numpy(true, np.float64)
    ref = to_numpy(ref_length, np.float64).reshape(-1)
    if pred.shape != true.shape or pred.ndim != 3 or pred.shape[2] != 2 or len(ref) != len(pred):
        raise ValueError(f"need pred/true [N, L, 2] and ref_length [N], got {pred.shape}, {true.shape}, {ref.shape}")
    if np.any(~(ref > 0)):
        raise ValueError("ref_length must be positive for every image")
    dist = np.linalg.norm(pred - true, axis=-1) / ref[:, None]
    if visible is None:
        return dist.mean(axis=1)
    vis = to_numpy(visible).astype(bool)
    counts = vis.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, (dist * vis).sum(axis=1) / counts, np.nan)


def _target_scale(variant: str, image_size: int | tuple[int, int] | None) -> float:
    """Factor that takes pixel landmarks to the units the variant regresses in.

    ``liu`` divides x by the width and y by the height (Liu ``utils/celeba/gen_anno_normed_wild.py``).
    A no-bias least-squares fit is linear in Y, so this changes predictions only by the same factor;
    the reference then measures distances in the scaled units. For a square image that is the pixel
    error over the same factor, which cancels against the equally scaled reference length. For a
    non-square image Liu's distances are anisotropic and do not correspond to a pixel reference
    length, so that case is refused rather than silently approximated.
    """
    if variant != "liu":
        return 1.0
    if image_size is None:
        raise ValueError("the liu variant needs image_size (height, width) to scale landmarks to [0, 1]")
    height, width = (image_size, image_size) if np.isscalar(image_size) else image_size
    if height != width:
        raise ValueError(f"the liu variant is only defined here for square images, got {image_size}")
    return 1.0 / float(width)


def _regress(fit_features, fit_landmarks, test_features, variant, image_size) -> np.ndarray:
    """Fit on [N, L, 2] landmarks, predict test landmarks [M, L, 2] back in pixel units."""
    scale = _target_scale(variant, image_size)
    fit_lm = to_numpy(fit_landmarks, np.float64)
    regressor = fit_landmark_regressor(fit_features, fit_lm.reshape(len(fit_lm), -1) * scale, variant)
    return regressor.predict(test_features).reshape(-1, *fit_lm.shape[1:]) / scale


def landmark_regression_errors(fit_features: Any, fit_landmarks: Any, test_features: Any, test_landmarks: Any,
                               test_ref_length: Any, variant: str, test_visible: Any = None,
                               image_size: int | tuple[int, int] | None = None) -> np.ndarray:
    """Per test image: mean over its (visible) landmarks of the L2 error of ONE joint linear map
    from features to all 2L landmark coordinates / ``test_ref_length``, as a fraction; NaN for an
    image with no visible landmark. The arguments are those of ``landmark_regression_error``."""
    pred = _regress(fit_features, fit_landmarks, test_features, variant, image_size)
    return normalised_landmark_error(pred, test_landmarks, test_ref_length, test_visible)


def landmark_regression_error(fit_features: Any, fit_landmarks: Any, test_features: Any, test_landmarks: Any,
                              test_ref_length: Any, variant: str, test_visible: Any = None,
                              image_size: int | tuple[int, int] | None = None) -> float:
    """Percent error of ONE joint linear map from features to all 2L landmark coordinates.

    REFERENCE 1.2: fit on (fit_features [N, F], fit_landmarks [N, L, 2]); predict the test
    landmarks; per test image mean over landmarks of L2 error / ``test_ref_length`` (pixels,
    e.g. ``inter_ocular_distance``); mean over images; x 100. Features must come from
    ``features_for_variant(..., variant)``. For ``liu`` the regression targets are the landmarks
    divided by the image side (``image_size``, square only, see ``_target_scale``); predictions are
    mapped back to pixels, which for a square image gives exactly Liu's normalised number.
    ``test_visible`` [M, L] only masks the error; the fit uses every landmark (a joint map needs all
    targets). Images with no visible landmark are left out of the mean.
    Tested against sklearn fits and a hand-computed case (tests/metrics/test_landmarks.py).
    """
    errors = landmark_regression_errors(fit_features, fit_landmarks, test_features, test_landmarks,
                                        test_ref_length, variant, test_visible, image_size)
    return float(np.nanmean(errors) * 100.0)


def per_landmark_regression_error(fit_features: Any, fit_landmarks: Any, fit_visible: Any, test_features: Any,
                                  test_landmarks: Any, test_visible: Any, test_ref_length: Any,
                                  variant: str = "no_intercept",
                                  image_size: int | tuple[int, int] | None = None) -> float:
    """Percent error with one regressor per landmark, each fitted where that landmark is visible.

    Reproduces the CUB branch of Liu et al. ``regression/scopsp_regression.py`` ``run_regression``
    (Lorenz et al. protocol): for landmark l, fit features -> (x_l, y_l) on the fit images where l is visible,
    predict the test images where l is visible, error = L2 distance / ``test_ref_length`` averaged
    over those images; the result is the unweighted mean over landmarks (Liu's ``AverageMeter``
    with n=1), skipping a landmark visible in no fit or no test image. Assumptions: Liu marks
    visibility as x > 0 where we take explicit flags, and Liu divides each axis by the bounding-box
    width/height where we divide the L2 distance by one length per image (Lorenz et al. normalise
    by the image edge, so pass the image side). ``variant`` picks the solver as in
    ``fit_landmark_regressor``. Tested against a hand loop with sklearn.
    """
    fit_lm, test_lm = to_numpy(fit_landmarks, np.float64), to_numpy(test_landmarks, np.float64)
    fit_vis, test_vis = to_numpy(fit_visible).astype(bool), to_numpy(test_visible).astype(bool)
    fit_x, test_x = to_numpy(fit_features, np.float64), to_numpy(test_features, np.float64)
    ref = to_numpy(test_ref_length, np.float64).reshape(-1)
    per_landmark = []
    for lm in range(fit_lm.shape[1]):
        fit_rows, test_rows = fit_vis[:, lm], test_vis[:, lm]
        if not fit_rows.any() or not test_rows.any():
            continue
        pred = _regress(fit_x[fit_rows], fit_lm[fit_rows, lm:lm + 1], test_x[test_rows], variant, image_size)
        errors = normalised_landmark_error(pred, test_lm[test_rows, lm:lm + 1], ref[test_rows])
        per_landmark.append(errors.mean())
    if not per_landmark:
        raise ValueError("no landmark is visible in both the fit and the test images")
    return float(np.mean(per_landmark) * 100.0)
