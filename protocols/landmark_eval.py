"""The landmark-regression pass shared by every keypoint protocol (REFERENCE 1.2): part
probabilities on ``regression_fit`` and ``test`` -> regression features per image -> one joint
linear map -> normalised error. Only per-image features and landmarks are kept, never the
probability maps. Needs the annotations ``landmarks``, ``landmark_visible`` and ``ref_length``.

``LandmarkProtocol`` is the whole protocol for the face sets (wild / aligned CelebA, faces_wild):
one metric, the error in the variant of option ``regression``.

The ``liu`` variant's soft-argmax runs on a map of the method's ``native_map_size`` when the method
reports one (liu_parts: 32 x 32 at 128 px with layer3 stride 1), else on ``LIU_GRID_SIZE`` = 16
(the released code's 16 x 16), by area pooling the predicted probabilities (``centres.liu_grid_size``).
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from segbench.protocols.evaluation import RowsOf, collect_rows, image_ids
from segbench.protocols.metrics.accumulate import RowAccumulator
from segbench.protocols.metrics.centres import LIU_GRID_SIZE, liu_grid_size
from segbench.protocols.metrics.landmarks import features_for_variant, landmark_regression_errors
from segbench.protocols.spec import MetricSpec, PerImage, Protocol

LANDMARK_METRIC = MetricSpec("landmark_err_{regression}_pct", False, "test", "%",
                             "landmark regression error / inter-ocular distance, mean over landmarks then images",
                             key="landmark_err")


def landmark_rows(batch: Mapping[str, Any], probs: np.ndarray, variant: str,
                  liu_grid: int = LIU_GRID_SIZE) -> dict[str, np.ndarray]:
    """Per image: regression features in ``variant``, landmarks, visibility and reference length.
    ``liu_grid``: the map side of the ``liu`` soft-argmax (``liu_grid_size(method)``)."""
    return {"features": features_for_variant(probs, variant, liu_grid), "landmarks": np.asarray(batch["landmarks"]),
            "visible": np.asarray(batch["landmark_visible"]), "ref": np.asarray(batch["ref_length"])}


def landmark_error(method: Any, splits: Mapping[str, Any], variant: str, *, batch_size: int, progress: bool,
                   test_rows: RowsOf | None = None) -> tuple[PerImage, RowAccumulator]:
    """(the error in percent with its per-image values, the test rows). ``test_rows(batch, probs)``
    adds columns to the test rows, so a protocol scores other metrics in the same pass."""
    liu_grid = liu_grid_size(method)  # the method's native part-map side, if it reports one

    def fit_rows(batch: dict[str, Any], probs: np.ndarray) -> dict[str, np.ndarray]:
        return landmark_rows(batch, probs, variant, liu_grid)

    def all_test_rows(batch: dict[str, Any], probs: np.ndarray) -> dict[str, Any]:
        return {**landmark_rows(batch, probs, variant, liu_grid), **(test_rows(batch, probs) if test_rows else {})}

    fit = collect_rows(method, splits["regression_fit"], fit_rows, batch_size=batch_size, progress=progress,
                       desc="regression_fit")
    test = collect_rows(method, splits["test"], all_test_rows, batch_size=batch_size, progress=progress, desc="test")
    errors = landmark_regression_errors(fit["features"], fit["landmarks"], test["features"], test["landmarks"],
                                        test["ref"], variant, test_visible=test["visible"],
                                        image_size=splits["test"].image(0).shape[:2])
    # The value as landmark_regression_error computes it; images without a visible landmark have
    # no error (NaN) and are left out of the mean, so also of the per-image values.
    defined = np.flatnonzero(np.isfinite(errors))
    value = PerImage(float(np.nanmean(errors) * 100.0), image_ids(splits["test"], defined), errors[defined] * 100.0)
    return value, test


class LandmarkProtocol(Protocol):
    """Subclasses set ``spec`` with ``LANDMARK_METRIC`` and the ``regression`` option."""

    def evaluate(self, method: Any, splits: Mapping[str, Any], *, batch_size: int = 32, progress: bool = True,
                 device: Any = None) -> dict[str, PerImage]:
        error, _ = landmark_error(method, splits, self.options["regression"], batch_size=batch_size,
                                  progress=progress)
        return {"landmark_err": error}
