"""Saliency metrics (Melas-Kyriazi et al.'s released metrics.py, audit rows 1 and 2b) against sklearn
accuracy/jaccard/precision_recall_fscore_support and hand-computed cases."""
from fractions import Fraction

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, jaccard_score, precision_recall_fscore_support

from segbench.protocols.metrics.saliency import (ALL_THRESHOLDS, OFFICIAL_THRESHOLDS, SaliencyAccumulator, fbeta,
                                        foreground_on_grids, image_precision_recall, saliency_metrics)

BETA = np.sqrt(0.3)


def _images(seed=0):
    """Varying sizes, one image with an empty GT and one with an all-zero prediction."""
    rng = np.random.default_rng(seed)
    probs, gts = [], []
    for i, (h, w) in enumerate([(12, 15), (20, 9), (16, 16), (7, 30), (11, 11), (14, 10)]):
        gt = rng.random((h, w)) > 0.6
        prob = np.clip(gt * 0.5 + rng.random((h, w)) * 0.6, 0, 1)
        if i == 3:
            gt[:] = False
        if i == 4:
            prob[:] = 0.0
        probs.append(prob.astype(np.float32))
        gts.append(gt)
    return probs, gts


def _sklearn_pr(prob, gt, t):
    p, r, _, _ = precision_recall_fscore_support(gt.ravel(), prob.ravel() > t, beta=BETA, average="binary",
                                                 zero_division=1.0)
    return p, r


def test_accuracy_and_iou_match_sklearn_per_image_mean():
    probs, gts = _images()
    got = saliency_metrics(probs, gts)
    acc = np.mean([accuracy_score(g.ravel(), p.ravel() > 0.5) for p, g in zip(probs, gts)])
    iou = np.mean([jaccard_score(g.ravel(), p.ravel() > 0.5, zero_division=0.0) for p, g in zip(probs, gts)])
    assert got["accuracy"] == pytest.approx(acc, rel=1e-12)
    assert got["iou"] == pytest.approx(iou, rel=1e-12)


def test_per_image_values_are_what_the_means_average():
    """accuracy, IoU and (official average) F at 0.5 per image, in update order, against sklearn;
    their means are the reported numbers. mean_pr builds F from averaged P and R: no per-image F."""
    probs, gts = _images()
    acc = SaliencyAccumulator()
    acc.update(probs[:2], gts[:2])
    acc.update(probs[2:], gts[2:])
    per_image, reported = acc.per_image(), acc.compute()
    np.testing.assert_allclose(per_image["accuracy"], [accuracy_score(g.ravel(), p.ravel() > 0.5)
                                                       for p, g in zip(probs, gts)], rtol=1e-12)
    np.testing.assert_allclose(per_image["iou"], [jaccard_score(g.ravel(), p.ravel() > 0.5, zero_division=0.0)
                                                  for p, g in zip(probs, gts)], rtol=1e-12)
    f_half = [float(fbeta(*map(np.array, _sklearn_pr(p, g, 0.5)))) for p, g in zip(probs, gts)]
    np.testing.assert_allclose(per_image["fbeta_at_0.5"], f_half, rtol=1e-12)
    for name, values in per_image.items():
        assert values.mean() == pytest.approx(reported[name], rel=1e-12)
    mean_pr = SaliencyAccumulator(average="mean_pr")
    mean_pr.update(probs, gts)
    assert set(mean_pr.per_image()) == {"accuracy", "iou"}


def test_precision_recall_curve_matches_sklearn_at_fixed_thresholds():
    """melas precision_recall: empty prediction -> P = 1, empty GT -> R = 1 (sklearn zero_division=1)."""
    probs, gts = _images()
    for prob, gt in zip(probs, gts):
        ks = [0, 1, 64, 127, 128, 200, 254, 255]
        p, r = image_precision_recall(prob.astype(np.float64).ravel(), gt.ravel(), ALL_THRESHOLDS[ks])
        expected = np.array([_sklearn_pr(prob.astype(np.float64), gt, k / 255) for k in ks])
        np.testing.assert_allclose(np.stack([p, r], 1), expected, rtol=1e-12)


def test_official_thresholds_are_k_over_255_for_k_1_to_254():
    """metrics.py compute_prs: np.arange(0, 1, 1/255) without 0."""
    assert len(OFFICIAL_THRESHOLDS) == 254
    assert OFFICIAL_THRESHOLDS[0] == pytest.approx(1 / 255) and OFFICIAL_THRESHOLDS[-1] == pytest.approx(254 / 255)
    assert len(ALL_THRESHOLDS) == 256 and ALL_THRESHOLDS[0] == 0 and ALL_THRESHOLDS[-1] == 1


def _sklearn_f(pr):
    return np.nan_to_num((1 + 0.3) * pr[..., 0] * pr[..., 1] / (0.3 * pr[..., 0] + pr[..., 1]))


def test_max_fbeta_and_fbeta_at_half_per_image_f_and_from_mean_pr():
    """Hand pipeline with sklearn per image: official (per-image F averaged, k = 1..254) and
    average="mean_pr" (F of the mean P/R, k = 0..255); F at 0.5 likewise."""
    probs, gts = _images(1)
    for average, thresholds in (("fbeta", OFFICIAL_THRESHOLDS), ("mean_pr", ALL_THRESHOLDS)):
        ts = np.append(thresholds, 0.5)
        pr = np.array([[_sklearn_pr(p.astype(np.float64), g, t) for t in ts] for p, g in zip(probs, gts)])
        if average == "fbeta":
            curve = _sklearn_f(pr).mean(0)
        else:
            curve = _sklearn_f(pr.mean(0))
        got = saliency_metrics(probs, gts, average=average)
        assert got["max_fbeta"] == pytest.approx(curve[:-1].max(), rel=1e-12)
        assert got["fbeta_at_0.5"] == pytest.approx(curve[-1], rel=1e-12)
    assert saliency_metrics(probs, gts) == saliency_metrics(probs, gts, average="fbeta")


def test_golden_single_image():
    """2x2: prob [[0.9, 0.6], [0.3, 0.0]], gt [[1, 0], [1, 0]]. At 0.5: acc 2/4, IoU 1/3, P = R = 1/2
    -> F = 1.3 * 0.25 / (0.15 + 0.5) = 0.5. Best F at t in [0.6, 0.9): P = 1, R = 1/2 ->
    F = 1.3 * 0.5 / (0.3 + 0.5) = 0.8125."""
    got = saliency_metrics([np.array([[0.9, 0.6], [0.3, 0.0]])], [np.array([[1, 0], [1, 0]], bool)])
    assert got == pytest.approx({"accuracy": 0.5, "iou": 1 / 3, "max_fbeta": 0.8125, "fbeta_at_0.5": 0.5})
    assert fbeta(np.array([0.0]), np.array([0.0]))[0] == 0.0


def _f(p, r):
    return (1 + Fraction(3, 10)) * p * r / (Fraction(3, 10) * p + r) if p or r else Fraction(0)


def test_golden_two_uncropped_images_official_and_mean_pr():
    """Two images of different, non-square sizes; no probability sits on a k/255 threshold.

    A (1x4): prob [0.9, 0.7, 0.3, 0.1], gt [1, 0, 1, 0]; B (1x3): prob [0.85, 0.45, 0.25], gt [1, 1, 0].
    Per-image (P, R) by threshold interval:
      t < 0.1        A (1/2, 1)    B (2/3, 1)
      [0.1, 0.25)    A (2/3, 1)    B (2/3, 1)
      [0.25, 0.3)    A (2/3, 1)    B (1, 1)
      [0.3, 0.45)    A (1/2, 1/2)  B (1, 1)
      [0.45, 0.7)    A (1/2, 1/2)  B (1, 1/2)
      [0.7, 0.85)    A (1, 1/2)    B (1, 1/2)
      [0.85, 0.9)    A (1, 1/2)    B (1, 0)
      t >= 0.9       A (1, 0)      B (1, 0)       (empty prediction: P = 1)
    Official: mean of per-image F is largest on [0.25, 0.3): (13/18 + 1) / 2 = 31/36.
    mean_pr: F(mean P, mean R) is largest there too: F(5/6, 1) = 13/15.
    At 0.5 (interval [0.45, 0.7)): official (1/2 + 13/16) / 2 = 21/32; mean_pr F(3/4, 1/2) = 39/58.
    Accuracy (1/2 + 2/3) / 2 = 7/12; IoU (1/3 + 1/2) / 2 = 5/12.
    """
    probs = [np.array([[0.9, 0.7, 0.3, 0.1]]), np.array([[0.85, 0.45, 0.25]])]
    gts = [np.array([[1, 0, 1, 0]], bool), np.array([[1, 1, 0]], bool)]
    half, third = Fraction(1, 2), Fraction(1, 3)
    assert _f(2 * third, 1) == Fraction(13, 18) and _f(1, half) == Fraction(13, 16)
    assert (_f(2 * third, 1) + 1) / 2 == Fraction(31, 36) and _f(Fraction(5, 6), 1) == Fraction(13, 15)
    assert (_f(half, half) + _f(1, half)) / 2 == Fraction(21, 32) and _f(Fraction(3, 4), half) == Fraction(39, 58)
    official = saliency_metrics(probs, gts)
    assert official == pytest.approx({"accuracy": 7 / 12, "iou": 5 / 12, "max_fbeta": 31 / 36,
                                      "fbeta_at_0.5": 21 / 32}, rel=1e-12)
    mean_pr = saliency_metrics(probs, gts, average="mean_pr")
    assert mean_pr == pytest.approx({"accuracy": 7 / 12, "iou": 5 / 12, "max_fbeta": 13 / 15,
                                     "fbeta_at_0.5": 39 / 58}, rel=1e-12)


def test_foreground_on_grids_upsamples_log_probabilities():
    """fg 0.8 | 0.2 in two columns, upsampled x2 (align_corners=False): the inner columns mix the
    logits 3:1, logit(0.8) = log 4, so they get sigmoid(+-log 2) = 2/3 and 1/3 (the released code
    upsamples logits then takes the softmax); the same-size case is the identity."""
    fg = torch.tensor([[0.8, 0.2]], dtype=torch.float64).expand(2, 2)
    probs = torch.stack([1 - fg, fg])
    (up,) = foreground_on_grids([probs], [(4, 4)])
    np.testing.assert_allclose(up, np.tile([0.8, 2 / 3, 1 / 3, 0.2], (4, 1)), rtol=1e-12)
    (same,) = foreground_on_grids([probs], [(2, 2)])
    np.testing.assert_allclose(same, fg.numpy(), rtol=1e-6)


def test_batch_accumulation_equals_all_at_once():
    probs, gts = _images(2)
    for mode in ("fbeta", "mean_pr"):
        whole = saliency_metrics(probs, gts, average=mode)
        acc = SaliencyAccumulator(average=mode)
        acc.update(probs[:2], gts[:2])
        acc.update([torch.from_numpy(p) for p in probs[2:5]], gts[2:5])
        acc.update(probs[5:], gts[5:])
        assert acc.compute() == pytest.approx(whole, rel=1e-12)


def test_mismatched_sizes_and_unknown_average_raise():
    with pytest.raises(ValueError):
        saliency_metrics([np.zeros((3, 3))], [np.zeros((3, 4), bool)])
    with pytest.raises(ValueError):
        SaliencyAccumulator(average="mean_f")
