"""Saliency-style foreground metrics of Melas-Kyriazi et al. Table 1, as the released code computes
them (lukemelas/unsupervised-image-segmentation ``segmentation/metrics.py``; audit
shared/docs/latent_direction_code_audit.md, which supersedes REFERENCE 1.5 here).

Per image, with the foreground probability p on the GT grid and the bool GT mask:

- accuracy and IoU of ``p > 0.5``; IoU of an empty union is 0;
- precision and recall of ``p > t``; an empty prediction has precision 1, an empty GT recall 1;
- F-beta (beta^2 = 0.3) = 1.3 P R / (0.3 P + R), 0 where P = R = 0.

Reported, each a plain mean over images: ``accuracy``, ``iou``; ``max_fbeta``, the max over
t = k/255, k = 1..254 (``compute_prs`` skips t = 0 and stops below 1) of the per-image F-beta
averaged over images (``F_max``); ``fbeta_at_0.5``, the per-image F-beta of ``p > 0.5``
averaged over images (``main.py:60`` ``f_beta``: one precision/recall pair per image, averaged
by the same ``F_max`` over its single threshold).

``average="mean_pr"`` is this project's earlier reading of the paper (REFERENCE 1.5): precision
and recall are averaged over images first and F is computed from the means, over k = 0..255.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from segbench.protocols.metrics._arrays import to_numpy, to_torch

FBETA_SQUARED = 0.3
BINARY_THRESHOLD = 0.5
OFFICIAL_THRESHOLDS = np.arange(1, 255, dtype=np.float64) / 255.0  # k = 1..254
ALL_THRESHOLDS = np.arange(256, dtype=np.float64) / 255.0  # k = 0..255 (average="mean_pr")
AVERAGES = ("fbeta", "mean_pr")


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
    between images but not between an image's prediction and its mask. ``thresholds`` default to
    k = 1..254 for ``average="fbeta"`` and k = 0..255 for ``"mean_pr"`` (each mode's source).
    """

    def __init__(self, average: str = "fbeta", thresholds: Any = None, beta_squared: float = FBETA_SQUARED) -> None:
        if average not in AVERAGES:
            raise ValueError(f"average must be one of {AVERAGES}, got {average!r}")
        if thresholds is None:
            thresholds = OFFICIAL_THRESHOLDS if average == "fbeta" else ALL_THRESHOLDS
        # The 0.5 binarisation rides along as the last threshold, so one sort serves both.
        self.thresholds = np.append(np.asarray(thresholds, dtype=np.float64), BINARY_THRESHOLD)
        self.average, self.beta_squared = average, beta_squared
        self.count = 0
        self.accuracy_sum = self.iou_sum = 0.0
        self.precision_sum = np.zeros_like(self.thresholds)
        self.recall_sum = np.zeros_like(self.thresholds)
        self.fbeta_sum = np.zeros_like(self.thresholds)
        # Per-image values of the scores that are plain means over images (``per_image``); the
        # reported numbers still come from the running sums above, as before.
        self._per_image: dict[str, list[float]] = {"accuracy": [], "iou": [], "fbeta_at_0.5": []}

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
            accuracy = np.count_nonzero(hard == truth) / truth.size
            iou = np.count_nonzero(hard & truth) / union if union else 0.0
            self.accuracy_sum += accuracy
            self.iou_sum += iou
            precision, recall = image_precision_recall(prob, truth, self.thresholds)
            self.precision_sum += precision
            self.recall_sum += recall
            image_fbeta = fbeta(precision, recall, self.beta_squared)
            self.fbeta_sum += image_fbeta
            self.count += 1
            for name, value in (("accuracy", accuracy), ("iou", iou), ("fbeta_at_0.5", image_fbeta[-1])):
                self._per_image[name].append(float(value))

    def compute(self) -> dict[str, float]:
        if self.count == 0:
            raise ValueError("no images were accumulated")
        if self.average == "mean_pr":
            curve = fbeta(self.precision_sum / self.count, self.recall_sum / self.count, self.beta_squared)
        else:
            curve = self.fbeta_sum / self.count
        return {"accuracy": self.accuracy_sum / self.count, "iou": self.iou_sum / self.count,
                "max_fbeta": float(curve[:-1].max()), "fbeta_at_0.5": float(curve[-1])}


    def per_image(self) -> dict[str, np.ndarray]:
        """Per-image values, in update order, of the ``compute`` scores that are plain means over
        images: ``accuracy``, ``iou`` and, with ``average="fbeta"``, ``fbeta_at_0.5`` (``max_fbeta``
        maxes over thresholds after averaging; ``mean_pr`` builds F from averaged P and R)."""
        names = ("accuracy", "iou", "fbeta_at_0.5") if self.average == "fbeta" else ("accuracy", "iou")
        return {name: np.array(self._per_image[name], np.float64) for name in names}


def saliency_metrics(pred_fg_prob: Sequence[Any] | Any, gt: Sequence[Any] | Any, **options: Any) -> dict[str, float]:
    """Accuracy, IoU, max F-beta and F-beta at 0.5 of foreground probabilities against bool masks
    (module docstring; ``options`` go to ``SaliencyAccumulator``). Tested against sklearn
    ``accuracy_score``, ``jaccard_score`` and ``precision_recall_fscore_support(beta=sqrt(0.3))``
    and hand-computed cases (tests/metrics/test_saliency.py)."""
    accumulator = SaliencyAccumulator(**options)
    accumulator.update(pred_fg_prob, gt)
    return accumulator.compute()


def foreground_on_grids(part_probs: Sequence[Any], shapes: Sequence[tuple[int, int]]) -> list[np.ndarray]:
    """Foreground probability (1 - background) of each prediction ``[K+1, h, w]`` on its GT grid.

    The released code upsamples the logits bilinearly (align_corners=False) to the mask and takes
    the softmax there (``main.py:58``; audit row 9). A method returns probabilities, so their logs
    are upsampled: they differ from the logits by a per-pixel constant, which the (linear)
    interpolation carries into every channel alike and the softmax removes. Probabilities are
    clamped at the smallest float64 to keep the logs finite.
    """
    out = []
    for probs, shape in zip(part_probs, shapes):
        p = to_torch(probs)
        if p.dim() != 3 or p.shape[0] < 2:
            raise ValueError(f"need [K+1, h, w] part probabilities, got {tuple(p.shape)}")
        log_probs = p.double().clamp_min(torch.finfo(torch.float64).tiny).log()
        if tuple(p.shape[-2:]) != tuple(shape):
            log_probs = F.interpolate(log_probs[None], size=tuple(shape), mode="bilinear", align_corners=False)[0]
        out.append((1 - log_probs.softmax(dim=0)[0]).clamp(0, 1).numpy())
    return out
