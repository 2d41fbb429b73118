"""Hungarian part mIoU against brute force over permutations; confusion against sklearn."""
import itertools

import numpy as np
import pytest
from sklearn.metrics import confusion_matrix as sk_confusion

from segbench.protocols.metrics.parts import confusion_matrix, hungarian_part_miou


def _labels(seed, n_pred, n_true, shape=(3, 12, 10)):
    rng = np.random.default_rng(seed)
    true = rng.integers(0, n_true, size=shape)
    pred = np.where(rng.random(shape) < 0.6, (true * 7 + 3) % n_pred, rng.integers(0, n_pred, size=shape))
    return pred, true


def _brute_force_miou(conf, ignore_bg=False):
    """Best one-to-one matching by enumeration; unmatched true labels score 0."""
    n_pred, n_true = conf.shape
    union = conf.sum(1, keepdims=True) + conf.sum(0, keepdims=True) - conf
    iou = np.where(union > 0, conf / np.maximum(union, 1), 0.0)
    trues = list(range(1 if ignore_bg else 0, n_true))
    best = -1.0
    for chosen in itertools.permutations(range(n_pred), min(n_pred, len(trues))):
        for true_subset in itertools.permutations(trues, len(chosen)):
            best = max(best, sum(iou[p, t] for p, t in zip(chosen, true_subset)))
    return best / len(trues)


def test_confusion_matches_sklearn_and_accumulates_by_summing():
    pred, true = _labels(0, 4, 5)
    conf = confusion_matrix(pred, true, 4, 5)
    np.testing.assert_array_equal(conf, sk_confusion(true.ravel(), pred.ravel(), labels=range(5))[:, :4].T)
    parts = confusion_matrix(pred[:1], true[:1], 4, 5) + confusion_matrix(pred[1:], true[1:], 4, 5)
    np.testing.assert_array_equal(parts, conf)
    assert conf.dtype == np.int64
    with pytest.raises(ValueError):
        confusion_matrix(pred, true, 3, 5)


@pytest.mark.parametrize("n_pred,n_true", [(4, 4), (3, 5), (5, 3)])
def test_hungarian_matches_brute_force(n_pred, n_true):
    for seed in range(3):
        pred, true = _labels(seed, n_pred, n_true)
        conf = confusion_matrix(pred, true, n_pred, n_true)
        for ignore_bg in (False, True):
            got = hungarian_part_miou(conf, ignore_true_background=ignore_bg)
            assert got["miou"] == pytest.approx(_brute_force_miou(conf, ignore_bg), rel=1e-12)


def test_hungarian_golden_permuted_labels_and_unmatched():
    """A perfect segmentation with permuted label ids scores 1; a missing true label scores 0."""
    true = np.array([[0, 0, 1, 1, 2, 2]])
    res = hungarian_part_miou(confusion_matrix((true + 1) % 3, true, 3, 3))
    assert res["miou"] == pytest.approx(1.0)
    np.testing.assert_array_equal(res["assignment"], [1, 2, 0])
    res = hungarian_part_miou(confusion_matrix(np.array([[0, 0, 1, 1, 1, 1]]), true, 2, 3))
    # best: pred0<->true0 (IoU 1), pred1<->true1 or true2 (IoU 2/4); the other true label unmatched
    assert res["miou"] == pytest.approx((1 + 0.5 + 0) / 3)
    assert (res["assignment"] == -1).sum() == 1
    absent = hungarian_part_miou(confusion_matrix(true, true, 4, 4))
    assert np.isnan(absent["per_part_iou"][3]) and absent["miou"] == pytest.approx(1.0)
