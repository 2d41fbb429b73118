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

from segbench.protocols.landmark_eval import landmark_error
from segbench.protocols.metrics.iou import foreground_from_probs, iou_per_image
from segbench.protocols.metrics.landmarks import REGRESSION_VARIANTS
from segbench.protocols.metrics.parts import confusion_matrix, hungarian_part_miou
from segbench.protocols.spec import MetricSpec, Protocol, ProtocolSpec

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
                       "landmark regression error / torso length, mean over landmarks then images"),
            MetricSpec("fg_iou_per_image_mean", True, "test", "",
                       "foreground (argmax not background) IoU per image, mean over images"),
            MetricSpec("part_miou_hungarian", True, "test", "",
                       "mean IoU over the 7 true labels after one-to-one Hungarian matching"),
        ),
        options={"regression": REGRESSION_VARIANTS},
    )

    def evaluate(self, method: Any, splits: Mapping[str, Any], *, batch_size: int = 32,
                 progress: bool = True) -> list[dict[str, Any]]:
        variant = self.options["regression"]
        ious: list[np.ndarray] = []
        confusion = np.zeros((method.num_parts + 1, NUM_TRUE_PARTS + 1), np.int64)

        def score_parts(batch, probs):
            nonlocal confusion
            ious.append(iou_per_image(foreground_from_probs(probs), batch["fg_mask"]))
            confusion = confusion + confusion_matrix(probs.argmax(1), batch["part_labels"],
                                                     method.num_parts + 1, NUM_TRUE_PARTS + 1)

        error, n_test = landmark_error(method, splits, variant, batch_size=batch_size, progress=progress,
                                       on_test_batch=score_parts)
        return [
            {"metric": f"landmark_err_{variant}_pct", "split": "test", "value": error, "n_eval": n_test},
            {"metric": "fg_iou_per_image_mean", "split": "test", "value": float(np.concatenate(ious).mean()),
             "n_eval": n_test},
            {"metric": "part_miou_hungarian", "split": "test", "value": hungarian_part_miou(confusion)["miou"],
             "n_eval": n_test},
        ]
