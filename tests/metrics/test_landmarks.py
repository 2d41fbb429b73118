"""Landmark regression variants against sklearn (REFERENCE 1.2), plus golden errors."""
import numpy as np
import pytest
from sklearn.linear_model import LinearRegression, Ridge
from sklearn.preprocessing import StandardScaler

from segbench.protocols.metrics.centres import part_centres, soft_argmax_centres_liu
from segbench.protocols.metrics.landmarks import (REGRESSION_VARIANTS, features_for_variant, fit_landmark_regressor,
                                         inter_ocular_distance, landmark_regression_error, landmark_regression_errors,
                                         normalised_landmark_error, per_landmark_regression_error)


def _data(n=60, f=6, t=4, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, f)) * 10 + 50
    y = x @ rng.normal(size=(f, t)) + 3 + rng.normal(size=(n, t))
    return x, y, rng.normal(size=(9, f)) * 10 + 50


def test_no_intercept_matches_sklearn_without_intercept():
    """GANSeg beta = (X^T X)^-1 X^T Y == LinearRegression(fit_intercept=False)."""
    x, y, x_test = _data()
    reg = fit_landmark_regressor(x, y, "no_intercept")
    ref = LinearRegression(fit_intercept=False).fit(x, y)
    assert not reg.ridge_used
    np.testing.assert_allclose(reg.predict(x_test), ref.predict(x_test), rtol=1e-8)


def test_no_intercept_singular_falls_back_to_ridge_lambda_1():
    """GANSeg fallback == Ridge(alpha=1, fit_intercept=False) on a singular X (duplicate column)."""
    x, y, x_test = _data()
    x = np.concatenate([x, x[:, :1]], axis=1)
    x_test = np.concatenate([x_test, x_test[:, :1]], axis=1)
    reg = fit_landmark_regressor(x, y, "no_intercept")
    assert reg.ridge_used
    ref = Ridge(alpha=1.0, fit_intercept=False).fit(x, y)
    np.testing.assert_allclose(reg.predict(x_test), ref.predict(x_test), rtol=1e-8)


def test_scops_equals_standardised_fit_and_ols_with_intercept():
    """SCOPS face_evaluation: StandardScaler + LinearRegression(fit_intercept=False) == OLS with bias."""
    x, y, x_test = _data()
    got = fit_landmark_regressor(x, y, "scops").predict(x_test)
    sx, sy = StandardScaler().fit(x), StandardScaler().fit(y)
    lin = LinearRegression(fit_intercept=False).fit(sx.transform(x), sy.transform(y))
    np.testing.assert_allclose(got, sy.inverse_transform(lin.predict(sx.transform(x_test))), rtol=1e-8)
    np.testing.assert_allclose(got, LinearRegression().fit(x, y).predict(x_test), rtol=1e-8)


def test_scops_zero_variance_columns_give_no_nan():
    """A constant feature and a constant target: StandardScaler keeps scale 1; no NaN anywhere."""
    x, y, x_test = _data()
    x[:, 2] = 0.1
    x_test[:, 2] = 0.1
    y[:, 1] = 7.0
    pred = fit_landmark_regressor(x, y, "scops").predict(x_test)
    assert np.isfinite(pred).all()
    np.testing.assert_allclose(pred[:, 1], 7.0)
    np.testing.assert_allclose(pred, LinearRegression().fit(x, y).predict(x_test), rtol=1e-7)


def test_liu_is_least_squares_without_bias():
    x, y, x_test = _data()
    np.testing.assert_allclose(fit_landmark_regressor(x, y, "liu").predict(x_test),
                               LinearRegression(fit_intercept=False).fit(x, y).predict(x_test), rtol=1e-8)


def test_normalised_error_golden_and_visibility():
    """Golden: errors 3 and 4 px over IOD 10 -> 0.35; with landmark 1 invisible -> 0.3."""
    true = np.array([[[0.0, 0.0], [10.0, 0.0]]])
    pred = true + np.array([[[3.0, 0.0], [0.0, 4.0]]])
    iod = inter_ocular_distance(true)
    np.testing.assert_allclose(iod, [10.0])
    np.testing.assert_allclose(normalised_landmark_error(pred, true, iod), [0.35])
    np.testing.assert_allclose(normalised_landmark_error(pred, true, iod, np.array([[True, False]])), [0.3])
    assert np.isnan(normalised_landmark_error(pred, true, iod, np.array([[False, False]]))[0])
    with pytest.raises(ValueError):
        normalised_landmark_error(pred, true, [0.0])


def _faces(n, k=3, l=5, seed=0, noise=1.0):
    """Random part maps and landmarks that depend on the centres linearly, plus noise."""
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.full(k + 1, 0.3), size=(n, 32, 32)).transpose(0, 3, 1, 2)
    centres = part_centres(probs).reshape(n, -1)
    lm = (centres @ rng.normal(size=(2 * k, 2 * l)) * 0.3 + 10 + noise * rng.normal(size=(n, 2 * l))).reshape(n, l, 2)
    lm[:, 1] = lm[:, 0] + [12.0, 1.0] + rng.normal(size=(n, 2))  # keep the eyes apart
    return probs, lm


def test_regression_error_golden_exact_linear_map_is_zero():
    """Landmarks an exact linear function of the centres -> 0 % for no_intercept."""
    probs, _ = _faces(40)
    feats = features_for_variant(probs, "no_intercept")
    lm = (feats @ np.random.default_rng(3).normal(size=(feats.shape[1], 10))).reshape(-1, 5, 2)
    err = landmark_regression_error(feats[:30], lm[:30], feats[30:], lm[30:], inter_ocular_distance(lm[30:]),
                                    "no_intercept")
    assert err == pytest.approx(0.0, abs=1e-6)


def test_regression_error_matches_sklearn_hand_computation_for_each_variant():
    """Percent error == hand pipeline with sklearn (LinearRegression; liu: targets / image side)."""
    probs, lm = _faces(80)
    fit, test = slice(0, 60), slice(60, 80)
    iod = inter_ocular_distance(lm[test])
    for variant, intercept, feats in [("no_intercept", False, part_centres(probs)),
                                      ("scops", True, part_centres(probs)),
                                      ("liu", False, soft_argmax_centres_liu(probs))]:
        x = feats.reshape(len(probs), -1)
        scale = 1 / 32 if variant == "liu" else 1.0
        model = LinearRegression(fit_intercept=intercept).fit(x[fit], lm[fit].reshape(60, -1) * scale)
        pred = model.predict(x[test]).reshape(-1, 5, 2)
        expected = np.mean(np.linalg.norm(pred - lm[test] * scale, axis=-1) / (iod[:, None] * scale)) * 100
        got = landmark_regression_error(x[fit], lm[fit], x[test], lm[test], iod, variant, image_size=32)
        assert got == pytest.approx(expected, rel=1e-8), variant
        per_image = landmark_regression_errors(x[fit], lm[fit], x[test], lm[test], iod, variant, image_size=32)
        hand = np.linalg.norm(pred - lm[test] * scale, axis=-1).mean(axis=1) / (iod * scale)
        np.testing.assert_allclose(per_image, hand, rtol=1e-8)
        assert np.mean(per_image) * 100 == pytest.approx(got, rel=1e-12)


def test_three_regression_variants_give_different_numbers():
    probs, lm = _faces(80, seed=5, noise=3.0)
    iod = inter_ocular_distance(lm[60:])
    errors = []
    for variant in REGRESSION_VARIANTS:
        feats = features_for_variant(probs, variant)
        errors.append(landmark_regression_error(feats[:60], lm[:60], feats[60:], lm[60:], iod, variant,
                                                image_size=(32, 32)))
    assert len({round(e, 6) for e in errors}) == 3, errors


def test_liu_needs_a_square_image_size():
    probs, lm = _faces(20)
    feats = features_for_variant(probs, "liu")
    args = (feats[:15], lm[:15], feats[15:], lm[15:], inter_ocular_distance(lm[15:]), "liu")
    with pytest.raises(ValueError):
        landmark_regression_error(*args)
    with pytest.raises(ValueError):
        landmark_regression_error(*args, image_size=(32, 48))


def test_features_for_variant_shapes():
    probs, _ = _faces(4, k=3)
    assert features_for_variant(probs, "no_intercept").shape == (4, 6)
    assert features_for_variant(probs, "scops").shape == (4, 6)
    assert features_for_variant(probs, "liu").shape == (4, 8)
    with pytest.raises(ValueError):
        features_for_variant(probs, "ols")


def test_per_landmark_error_matches_hand_loop():
    """Liu's CUB branch: per landmark, fit/test on visible rows, mean per landmark, mean of means."""
    probs, lm = _faces(90, seed=7)
    rng = np.random.default_rng(8)
    vis = rng.random((90, 5)) > 0.3
    vis[60:, 4] = False  # landmark 4 never visible in test: skipped
    feats = features_for_variant(probs, "no_intercept")
    edge = np.full(30, 32.0)
    means = []
    for l in range(4):
        f, t = vis[:60, l], vis[60:, l]
        model = LinearRegression(fit_intercept=False).fit(feats[:60][f], lm[:60][f, l])
        d = np.linalg.norm(model.predict(feats[60:][t]) - lm[60:][t, l], axis=-1) / 32.0
        means.append(d.mean())
    got = per_landmark_regression_error(feats[:60], lm[:60], vis[:60], feats[60:], lm[60:], vis[60:], edge)
    assert got == pytest.approx(np.mean(means) * 100, rel=1e-8)
