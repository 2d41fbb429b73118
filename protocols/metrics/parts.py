"""Part segmentation mIoU after a one-to-one Hungarian matching of predicted to true labels."""
from __future__ import annotations

from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from segbench.protocols.metrics._arrays import to_numpy


def confusion_matrix(pred_labels: Any, true_labels: Any, n_pred: int, n_true: int) -> np.ndarray:
    """int64 [n_pred, n_true] pixel counts; sum the matrices of several batches to accumulate.
    Tested against ``sklearn.metrics.confusion_matrix`` (transposed: rows are predictions)."""
    pred, true = to_numpy(pred_labels).astype(np.int64).ravel(), to_numpy(true_labels).astype(np.int64).ravel()
    if pred.shape != true.shape:
        raise ValueError(f"pred and true label maps differ in size: {np.shape(pred_labels)} vs {np.shape(true_labels)}")
    if pred.size and (pred.min() < 0 or pred.max() >= n_pred or true.min() < 0 or true.max() >= n_true):
        raise ValueError(f"labels out of range: pred in [0, {n_pred}), true in [0, {n_true})")
    counts = np.bincount(pred * n_true + true, minlength=n_pred * n_true)
    return counts.reshape(n_pred, n_true).astype(np.int64)


def hungarian_part_miou(confusion: Any, ignore_true_background: bool = False) -> dict[str, Any]:
    """mIoU over true labels after matching predicted labels one-to-one so total IoU is maximal.

    IoU(p, t) = C[p, t] / (|pred p| + |true t| - C[p, t]) from the accumulated confusion matrix;
    ``scipy.optimize.linear_sum_assignment`` on -IoU. Choices: background (label 0) is a label like
    any other unless ``ignore_true_background``, which removes true label 0 from the matching and
    the mean (predicted labels may then match any true part); when n_pred < n_true the unmatched
    true labels count IoU 0 (when n_pred > n_true the extra predicted labels stay
    unmatched); a true label with no pixel at all has undefined IoU (NaN in
    ``per_part_iou``) and is left out of the mean. Returns ``miou``, ``per_part_iou`` [n_true] and
    ``assignment`` [n_true] (the matched predicted label, -1 if none).
    Tested against brute force over permutations (tests/metrics/test_parts.py).
    """
    conf = to_numpy(confusion, np.float64)
    n_pred, n_true = conf.shape
    union = conf.sum(axis=1, keepdims=True) + conf.sum(axis=0, keepdims=True) - conf
    iou = np.divide(conf, union, out=np.zeros_like(conf), where=union > 0)
    candidates = np.arange(1 if ignore_true_background else 0, n_true)
    rows, cols = linear_sum_assignment(-iou[:, candidates])
    assignment = np.full(n_true, -1, dtype=np.int64)
    assignment[candidates[cols]] = rows
    per_part = np.zeros(n_true)
    per_part[candidates[cols]] = iou[rows, candidates[cols]]
    per_part[conf.sum(axis=0) == 0] = np.nan
    if ignore_true_background:
        per_part[0] = np.nan
    scored = per_part[candidates]
    miou = float(np.nanmean(scored)) if np.isfinite(scored).any() else float("nan")
    return {"miou": miou, "per_part_iou": per_part, "assignment": assignment}
