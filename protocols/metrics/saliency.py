"""Saliency-style foreground metrics of Melas-Kyriazi et al. Table 1 (REFERENCE 1.5).

Per image: accuracy and IoU of the prediction binarised at > 0.5, and precision/recall at each
threshold t in {k/255 : k = 0..255} (prediction > t). Reported: mean accuracy, mean IoU over
images, and max over t of F-beta (beta^2 = 0.3).

F-beta aggregation: REFERENCE 1.5 (and the default ``fbeta_from="mean_pr"``) averages the
per-image precision and recall over images and computes F from those means. The released
``src/metrics.py:F_max`` instead computes F per image and averages F (``fbeta_from="mean_f"``);
it also scans only k = 1..254 (pass ``thresholds``). Conventions from that file: an empty
prediction has precision 1, an empty GT recall 1, F with P = R = 0 is 0, an empty union IoU 0.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from protocols.metrics._arrays import to_numpy

FBETA_SQUARED = 0.3
BINARY_THRESHOLD = 0.5
FBETA_THRESHOLDS = np.arange(256, dtype=np.float64) / 255.0
FBETA_MODES = ("mean_pr", "mean_f")


def fbeta(precision: np.ndarray, recall: np.ndarray, beta_squared: float = FBETA_SQUARED) -> np.ndarray:
    """(1 + b^2) P R / (b^2 P + R), 0 where P = R = 0 (metrics.py ``F_scores`` NaN handling).
    Tested against a hand formula over sklearn's per-image P/R (test_saliency.py)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        f = (1 + beta_squared) * precision * recall / (beta_squared * precision + recall)
    return np.nan_to_num(f, nan=0.0)


def image_precision_recall(prob: np.ndarray, gt: np.ndarray, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Precision and recall of ``prob > t`` against ``gt`` for every t (sorted once, no loop);
    melas ``precision_recall`` conventions. Tested against sklearn
    ``precision_recall_fscore_support(beta=sqrt(0.3), zero_division=1)`` at fixed thresholds."""
    order = np.argsort(prob, kind="stable")
    sorted_prob = prob[order]
    gt_sorted_cumsum = np.concatenate([[0], np.cumsum(gt[order])])
    n_le = np.searchsorted(sorted_prob, thresholds, side="right")  # pixels with prob <= t
    n_pred = prob.size - n_le
    n_gt = gt_sorted_cumsum[-1]
    true_pos = n_gt - gt_sorted_cumsum[n_le]
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(n_pred > 0, true_pos / np.maximum(n_pred, 1), 1.0)
        recall = np.full(thresholds.shape, 1.0) if n_gt == 0 else true_pos / n_gt
    return precision, recall


class SaliencyAccumulator:
    """Running sums over images; ``compute()`` after any batching equals one call on all images.

    ``update(pred_probs, gt)``: ``pred_probs`` a sequence (or [B, H, W] array/tensor) of
    foreground probabilities in [0, 1]; ``gt`` a matching sequence of bool masks. Sizes may differ
    between images but not between an image's prediction and its mask.
    """

    def __init__(self, thresholds: Any = FBETA_THRESHOLDS, fbeta_from: str = "mean_pr",
                 beta_squared: float = FBETA_SQUARED) -> None:
        if fbeta_from not in FBETA_MODES:
            raise ValueError(f"fbeta_from must be one of {FBETA_MODES}, got {fbeta_from!r}")
        self.thresholds = np.asarray(thresholds, dtype=np.float64)
        self.fbeta_from, self.beta_squared = fbeta_from, beta_squared
        self.count = 0
        self.accuracy_sum = self.iou_sum = 0.0
        self.precision_sum = np.zeros_like(self.thresholds)
        self.recall_sum = np.zeros_like(self.thresholds)
        self.fbeta_sum = np.zeros_like(self.thresholds)

    def update(self, pred_probs: Sequence[Any] | Any, gt: Sequence[Any] | Any) -> None:
        if len(pred_probs) != len(gt):
            raise ValueError(f"{len(pred_probs)} predictions for {len(gt)} masks")
        for prob_map, gt_map in zip(pred_probs, gt):
            prob, truth = to_numpy(prob_map, np.float64), to_numpy(gt_map).astype(bool)
            if prob.shape != truth.shape:
                raise ValueError(f"a prediction {prob.shape} and its mask {truth.shape} must be the same size")
            prob, truth = prob.reshape(-1), truth.reshape(-1)
            hard = prob > BINARY_THRESHOLD
            union = np.count_nonzero(hard | truth)
            self.accuracy_sum += np.count_nonzero(hard == truth) / truth.size
            self.iou_sum += np.count_nonzero(hard & truth) / union if union else 0.0
            precision, recall = image_precision_recall(prob, truth, self.thresholds)
            self.precision_sum += precision
            self.recall_sum += recall
            self.fbeta_sum += fbeta(precision, recall, self.beta_squared)
            self.count += 1

    def compute(self) -> dict[str, float]:
        if self.count == 0:
            raise ValueError("no images were accumulated")
        if self.fbeta_from == "mean_pr":
            curve = fbeta(self.precision_sum / self.count, self.recall_sum / self.count, self.beta_squared)
        else:
            curve = self.fbeta_sum / self.count
        return {"accuracy": self.accuracy_sum / self.count, "iou": self.iou_sum / self.count,
                "max_fbeta": float(curve.max())}


def saliency_metrics(pred_fg_prob: Sequence[Any] | Any, gt: Sequence[Any] | Any, **options: Any) -> dict[str, float]:
    """Accuracy, IoU (binarised at > 0.5, per image, mean over images) and max F-beta
    (beta^2 = 0.3 over t = k/255) of foreground probabilities against bool masks.

    Reproduces Melas-Kyriazi et al. ``src/metrics.py:61-105`` as REFERENCE 1.5 describes it (see
    the module docstring for the F aggregation; ``options`` go to ``SaliencyAccumulator``).
    Tested against sklearn ``accuracy_score``, ``jaccard_score`` and
    ``precision_recall_fscore_support(beta=sqrt(0.3))`` (tests/metrics/test_saliency.py).
    """
    accumulator = SaliencyAccumulator(**options)
    accumulator.update(pred_fg_prob, gt)
    return accumulator.compute()
