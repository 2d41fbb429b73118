"""The landmark-regression pass shared by every keypoint protocol (REFERENCE 1.2): part
probabilities on ``regression_fit`` and ``test`` -> regression features per image -> one joint
linear map -> normalised error. Only per-image features and landmarks are kept, never the
probability maps. Needs the annotations ``landmarks``, ``landmark_visible`` and ``ref_length``.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

import numpy as np

from segbench.protocols.evaluation import for_each_batch
from segbench.protocols.metrics.landmarks import features_for_variant, landmark_regression_error

TestBatchHook = Callable[[dict[str, Any], np.ndarray], None]


class LandmarkFeatures:
    """Accumulates (features, landmarks, visibility, reference length) batch by batch."""

    def __init__(self, variant: str) -> None:
        self.variant = variant
        self.parts: dict[str, list[np.ndarray]] = {"features": [], "landmarks": [], "visible": [], "ref": []}

    def update(self, batch: Mapping[str, Any], probs: np.ndarray) -> None:
        self.parts["features"].append(features_for_variant(probs, self.variant))
        self.parts["landmarks"].append(np.asarray(batch["landmarks"]))
        self.parts["visible"].append(np.asarray(batch["landmark_visible"]))
        self.parts["ref"].append(np.asarray(batch["ref_length"]))

    def array(self, key: str) -> np.ndarray:
        return np.concatenate(self.parts[key])


def landmark_error(method: Any, splits: Mapping[str, Any], variant: str, *, batch_size: int, progress: bool,
                   on_test_batch: TestBatchHook | None = None) -> tuple[float, int]:
    """(error in percent, number of test images). ``on_test_batch`` lets a protocol score other
    metrics in the same pass over the test images."""
    fit, test = LandmarkFeatures(variant), LandmarkFeatures(variant)
    for_each_batch(method, splits["regression_fit"], batch_size, progress, "regression_fit", fit.update)

    def update_test(batch: dict[str, Any], probs: np.ndarray) -> None:
        test.update(batch, probs)
        if on_test_batch is not None:
            on_test_batch(batch, probs)

    n_test = for_each_batch(method, splits["test"], batch_size, progress, "test", update_test)
    error = landmark_regression_error(
        fit.array("features"), fit.array("landmarks"), test.array("features"), test.array("landmarks"),
        test.array("ref"), variant, test_visible=test.array("visible"),
        image_size=splits["test"].image(0).shape[:2])
    return error, n_test
