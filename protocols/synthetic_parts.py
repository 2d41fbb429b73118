"""The embedded benchmark: landmarks, foreground and parts with exact ground truth.

Landmark error follows the wild-CelebA recipe (part centres -> one joint linear map fitted on
``regression_fit`` -> error per landmark / per-image reference length, mean over landmarks
then images, percent); the reference length is the figure's torso length, the analogue of
the inter-ocular distance. Foreground IoU is per image then averaged (masks are already at
the evaluation resolution, so no resize variant applies). Part mIoU matches predicted to
true parts one-to-one (Hungarian) over the whole test split.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from segbench.protocols.evaluation import image_ids
from segbench.protocols.landmark_eval import landmark_error
from segbench.protocols.metrics.iou import foreground_from_probs, iou_per_image
from segbench.protocols.metrics.landmarks import REGRESSION_VARIANTS
from segbench.protocols.metrics.parts import confusion_matrix, hungarian_part_miou
from segbench.protocols.spec import MetricSpec, MetricValue, PerImage, Protocol, ProtocolSpec

NUM_TRUE_PARTS = 6


class SyntheticPartsProtocol(Protocol):
    spec = ProtocolSpec(
        name="synthetic_parts",
        version="1",
        reproduces="segbench embedded benchmark (no paper table)",
        dataset="synthetic_parts",
        splits={"fit": "train", "regression_fit": "regression_fit", "test": "test"},
        image_size=64,
        needs=frozenset({"parts"}),
        num_parts=NUM_TRUE_PARTS,
        metrics=(
            MetricSpec("landmark_err_{regression}_pct", False, "test", "%",
                       "landmark regression error / torso length, mean over landmarks then images",
                       key="landmark_err"),
            MetricSpec("fg_iou_per_image_mean", True, "test", "",
                       "foreground (argmax not background) IoU per image, mean over images", key="fg_iou"),
            MetricSpec("part_miou_hungarian", True, "test", "",
                       "mean IoU over the 7 true labels after one-to-one Hungarian matching", key="part_miou"),
        ),
        options={"regression": REGRESSION_VARIANTS},
    )

    def evaluate(self, method: Any, splits: Mapping[str, Any], *, batch_size: int = 32, progress: bool = True,
                 device: Any = None) -> dict[str, MetricValue]:
        confusion = np.zeros((method.num_parts + 1, NUM_TRUE_PARTS + 1), np.int64)

        def score_parts(batch: dict[str, Any], probs: np.ndarray) -> dict[str, np.ndarray]:
            nonlocal confusion  # a sum over the split, not a per-image row
            confusion = confusion + confusion_matrix(probs.argmax(1), batch["part_labels"],
                                                     method.num_parts + 1, NUM_TRUE_PARTS + 1)
            return {"fg_iou": iou_per_image(foreground_from_probs(probs), batch["fg_mask"])}

        error, test = landmark_error(method, splits, self.options["regression"], batch_size=batch_size,
                                     progress=progress, test_rows=score_parts)
        ious = test["fg_iou"]
        return {"landmark_err": error,
                "fg_iou": PerImage(float(ious.mean()), image_ids(splits["test"]), ious),
                "part_miou": hungarian_part_miou(confusion)["miou"]}
