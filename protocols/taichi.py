"""Taichi, GANSeg Tab.3 (K = 10): keypoint MAE and foreground IoU (REFERENCE 1.3, 1.4).

- The method fits on the GAN training frames ``train`` (dataset option ``augment=ganseg``: random
  horizontal flip, GANSeg ``TaichiTrain``), at 128 px.
- MAE (``taichi_mae_sum36``): part centres (2K features, pixels at 128) on the 5,000
  ``regression_fit`` frames and the 300 ``test`` frames; for each of the 36 (keypoint, axis)
  targets an OLS fit with intercept on the fit frames where it is present, the mean absolute error
  on the test frames where it is present; the SUM of the 36 errors, in pixels of the 256-px frames
  (the keypoints are used as stored: ``keypoints_256``). ``protocols.metrics.taichi.taichi_mae``.
- IoU (``fg_iou_ganseg``): on the test frames, foreground = argmax not background at 128; GT = the
  test mask resized to 128 then > 0.5 (GANSeg truncates instead, see ``datasets.taichi``); mean of
  per-image IoUs.
Both metrics come from one pass over the test frames; only per-image features, keypoints and IoUs
are kept.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from segbench.protocols.evaluation import for_each_batch
from segbench.protocols.metrics.centres import part_centres
from segbench.protocols.metrics.iou import fg_iou_ganseg, summarise_fg_iou
from segbench.protocols.metrics.taichi import taichi_mae
from segbench.protocols.spec import MetricSpec, Protocol, ProtocolSpec


class TaichiRows:
    """Per-frame features (flattened part centres), keypoints at 256 px and, when asked, IoUs."""

    def __init__(self, with_iou: bool = False) -> None:
        self.features: list[np.ndarray] = []
        self.keypoints: list[np.ndarray] = []
        self.ious: list[np.ndarray] | None = [] if with_iou else None

    def update(self, batch: Mapping[str, Any], probs: np.ndarray) -> None:
        self.features.append(part_centres(probs).reshape(len(probs), -1))
        self.keypoints.append(np.asarray(batch["keypoints_256"], np.float64))
        if self.ious is not None:
            self.ious.append(fg_iou_ganseg(probs, list(batch["fg_mask"]), probs.shape[-1]))


class TaichiProtocol(Protocol):
    spec = ProtocolSpec(
        name="taichi",
        version="1",
        reproduces="GANSeg Tab.3 Taichi MAE and IoU (K=10)",
        dataset="taichi",
        splits={"fit": "train", "regression_fit": "regression_fit", "test": "test"},
        image_size=128,
        needs=frozenset({"parts"}),
        num_parts=10,
        metrics=(
            MetricSpec("taichi_mae_sum36", False, "test", "px at 256",
                       "sum over 18 keypoints x 2 axes of the test MAE of per-target OLS (with intercept)"),
            MetricSpec("fg_iou_ganseg", True, "test", "", "foreground IoU on the 300 test masks (> 0.5), mean"),
        ),
        dataset_options={"augment": "ganseg"},
    )

    def evaluate(self, method: Any, splits: Mapping[str, Any], *, batch_size: int = 32,
                 progress: bool = True) -> list[dict[str, Any]]:
        fit, test = TaichiRows(), TaichiRows(with_iou=True)
        for_each_batch(method, splits["regression_fit"], batch_size, progress, "regression_fit", fit.update)
        n_test = for_each_batch(method, splits["test"], batch_size, progress, "test", test.update)
        mae = taichi_mae(np.concatenate(fit.features), np.concatenate(fit.keypoints),
                         np.concatenate(test.features), np.concatenate(test.keypoints))
        iou = summarise_fg_iou("ganseg", np.concatenate(test.ious))
        name = splits["test"].name
        return [{"metric": "taichi_mae_sum36", "split": name, "value": mae, "n_eval": n_test},
                {"metric": "fg_iou_ganseg", "split": name, "value": iou, "n_eval": n_test}]
