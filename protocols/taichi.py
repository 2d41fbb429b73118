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
are kept. The IoU comes with its per-image values; the MAE, a sum of per-target means over
different subsets of frames, does not.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from segbench.protocols.evaluation import collect_rows, image_ids
from segbench.protocols.metrics.centres import part_centres
from segbench.protocols.metrics.iou import fg_iou, summarise_fg_iou
from segbench.protocols.metrics.taichi import taichi_mae
from segbench.protocols.spec import MetricSpec, MetricValue, PerImage, Protocol, ProtocolSpec


def frame_rows(batch: Mapping[str, Any], probs: np.ndarray) -> dict[str, np.ndarray]:
    """Per frame: flattened part centres (pixels at 128) and the keypoints at 256 px."""
    return {"features": part_centres(probs).reshape(len(probs), -1),
            "keypoints": np.asarray(batch["keypoints_256"], np.float64)}


def scored_frame_rows(batch: Mapping[str, Any], probs: np.ndarray) -> dict[str, np.ndarray]:
    return {**frame_rows(batch, probs), "iou": fg_iou("ganseg", probs, list(batch["fg_mask"]))}


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
                       "sum over 18 keypoints x 2 axes of the test MAE of per-target OLS (with intercept)", key="mae"),
            MetricSpec("fg_iou_ganseg", True, "test", "", "foreground IoU on the 300 test masks (> 0.5), mean",
                       key="fg_iou"),
        ),
        dataset_options={"augment": "ganseg"},
    )

    def evaluate(self, method: Any, splits: Mapping[str, Any], *, batch_size: int = 32, progress: bool = True,
                 device: Any = None) -> dict[str, MetricValue]:
        fit = collect_rows(method, splits["regression_fit"], frame_rows, batch_size=batch_size, progress=progress,
                           desc="regression_fit")
        test = collect_rows(method, splits["test"], scored_frame_rows, batch_size=batch_size, progress=progress,
                            desc="test")
        ious = test["iou"]
        return {"mae": taichi_mae(fit["features"], fit["keypoints"], test["features"], test["keypoints"]),
                "fg_iou": PerImage(summarise_fg_iou("ganseg", ious), image_ids(splits["test"]), ious)}
