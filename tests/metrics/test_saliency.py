"""Saliency metrics (REFERENCE 1.5) against sklearn accuracy/jaccard/precision_recall_fscore_support."""
import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, jaccard_score, precision_recall_fscore_support

from protocols.metrics.saliency import (FBETA_THRESHOLDS, SaliencyAccumulator, fbeta, image_precision_recall,
                                        saliency_metrics)

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


def test_precision_recall_curve_matches_sklearn_at_fixed_thresholds():
    """melas precision_recall: empty prediction -> P = 1, empty GT -> R = 1 (sklearn zero_division=1)."""
    probs, gts = _images()
    for prob, gt in zip(probs, gts):
        ks = [0, 1, 64, 127, 128, 200, 254, 255]
        p, r = image_precision_recall(prob.astype(np.float64).ravel(), gt.ravel(), FBETA_THRESHOLDS[ks])
        expected = np.array([_sklearn_pr(prob.astype(np.float64), gt, k / 255) for k in ks])
        np.testing.assert_allclose(np.stack([p, r], 1), expected, rtol=1e-12)


def test_max_fbeta_from_mean_pr_and_from_mean_f():
    """Hand pipeline on all 256 thresholds with sklearn per image; both aggregation modes."""
    probs, gts = _images(1)
    pr = np.array([[_sklearn_pr(p.astype(np.float64), g, t) for t in FBETA_THRESHOLDS] for p, g in zip(probs, gts)])
    mean_p, mean_r = pr[..., 0].mean(0), pr[..., 1].mean(0)
    f_of_means = np.nan_to_num((1 + 0.3) * mean_p * mean_r / (0.3 * mean_p + mean_r))
    f_per_image = np.nan_to_num((1 + 0.3) * pr[..., 0] * pr[..., 1] / (0.3 * pr[..., 0] + pr[..., 1])).mean(0)
    assert saliency_metrics(probs, gts)["max_fbeta"] == pytest.approx(f_of_means.max(), rel=1e-12)
    assert saliency_metrics(probs, gts, fbeta_from="mean_f")["max_fbeta"] == pytest.approx(f_per_image.max(), rel=1e-12)


def test_golden_single_image():
    """2x2: prob [[0.9, 0.6], [0.3, 0.0]], gt [[1, 0], [1, 0]]. At 0.5: acc 2/4, IoU 1/3.
    Best F at t in [0.6, 0.9): P = 1, R = 1/2 -> F = 1.3 * 0.5 / (0.3 + 0.5) = 0.8125."""
    got = saliency_metrics([np.array([[0.9, 0.6], [0.3, 0.0]])], [np.array([[1, 0], [1, 0]], bool)])
    assert got == pytest.approx({"accuracy": 0.5, "iou": 1 / 3, "max_fbeta": 0.8125})
    assert fbeta(np.array([0.0]), np.array([0.0]))[0] == 0.0


def test_batch_accumulation_equals_all_at_once():
    probs, gts = _images(2)
    whole = saliency_metrics(probs, gts)
    for mode in ("mean_pr", "mean_f"):
        acc = SaliencyAccumulator(fbeta_from=mode)
        acc.update(probs[:2], gts[:2])
        acc.update([torch.from_numpy(p) for p in probs[2:5]], gts[2:5])
        acc.update(probs[5:], gts[5:])
        batched = acc.compute()
        reference = whole if mode == "mean_pr" else saliency_metrics(probs, gts, fbeta_from=mode)
        assert batched == pytest.approx(reference, rel=1e-12)


def test_mismatched_sizes_raise():
    with pytest.raises(ValueError):
        saliency_metrics([np.zeros((3, 3))], [np.zeros((3, 4), bool)])
