"""CUB keypoints, GANSeg Sec. 4.4 ("we evaluate our model on CUB using the protocol of [34]
(Lorenz et al.) ... L2 error normalized by edge length of the image"): 3.23 % for GANSeg.

Protocol as implemented (GANSeg released no code for it; choices recorded here):
- Images: the whole image resized to 128 x 128 (the CUB model of Tab.2, K = 8, trained on the
  ReDO ``train`` split with GANSeg's augmentation); the 15 CUB part locations scaled with the resize.
- Features: the 2K part centres of each image (REFERENCE 1.1, ``part_centres``).
- Regression (Lorenz et al. / Liu et al. CUB branch, ``per_landmark_regression_error``): one
  linear map per landmark, fitted on the ``train`` images where that landmark is visible, without
  intercept (GANSeg's solver, ``no_intercept``), applied to the ``test`` images where it is visible.
- Error: L2 distance / image edge (128), averaged over the test images per landmark, then over the
  landmarks; in percent. Metric ``kp_err_edge_pct``.
Per batch only the features, landmarks and visibility flags are kept.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from segbench.protocols.evaluation import for_each_batch
from segbench.protocols.metrics.landmarks import features_for_variant, per_landmark_regression_error
from segbench.protocols.spec import MetricSpec, Protocol, ProtocolSpec

CUB_KP_REGRESSION = "no_intercept"  # GANSeg's landmark solver (REFERENCE 1.2)


class KeypointRows:
    """Per-image regression features, landmarks, visibility and reference length, batch by batch."""

    def __init__(self) -> None:
        self.chunks: dict[str, list[np.ndarray]] = {"features": [], "landmarks": [], "visible": [], "ref": []}

    def update(self, batch: Mapping[str, Any], probs: np.ndarray) -> None:
        self.chunks["features"].append(features_for_variant(probs, CUB_KP_REGRESSION))
        self.chunks["landmarks"].append(np.asarray(batch["landmarks"]))
        self.chunks["visible"].append(np.asarray(batch["landmark_visible"]))
        self.chunks["ref"].append(np.asarray(batch["ref_length"]))

    def __getitem__(self, key: str) -> np.ndarray:
        return np.concatenate(self.chunks[key])


class CubKeypointProtocol(Protocol):
    spec = ProtocolSpec(
        name="cub_kp",
        version="1",
        reproduces="GANSeg Sec. 4.4 CUB keypoints (Lorenz et al. protocol, error / image edge)",
        dataset="cub",
        splits={"fit": "train", "regression_fit": "train", "test": "test"},
        image_size=128,
        needs=frozenset({"parts"}),
        num_parts=8,  # the K = 8 CUB model of Tab.2 (Sec. 4.4 does not restate K)
        metrics=(MetricSpec("kp_err_edge_pct", False, "test", "%",
                            "per-landmark regression on visible points, L2 error / image edge, mean over landmarks"),),
        dataset_options={"augment": "ganseg", "annotations": "keypoints"},
    )

    def evaluate(self, method: Any, splits: Mapping[str, Any], *, batch_size: int = 32,
                 progress: bool = True) -> list[dict[str, Any]]:
        fit, test = KeypointRows(), KeypointRows()
        for_each_batch(method, splits["regression_fit"], batch_size, progress, "regression_fit", fit.update)
        n_test = for_each_batch(method, splits["test"], batch_size, progress, "test", test.update)
        error = per_landmark_regression_error(fit["features"], fit["landmarks"], fit["visible"], test["features"],
                                              test["landmarks"], test["visible"], test["ref"], CUB_KP_REGRESSION)
        return [{"metric": "kp_err_edge_pct", "split": splits["test"].name, "value": error, "n_eval": n_test}]
