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
Per batch only the features, landmarks and visibility flags are kept. The metric is a mean over
landmarks, not over images, so it has no per-image values.
"""
from __future__ import annotations

from typing import Any, Mapping

from segbench.protocols.evaluation import collect_rows
from segbench.protocols.landmark_eval import landmark_rows
from segbench.protocols.metrics.landmarks import per_landmark_regression_error
from segbench.protocols.spec import MetricSpec, Protocol, ProtocolSpec

CUB_KP_REGRESSION = "no_intercept"  # GANSeg's landmark solver (REFERENCE 1.2)


def _rows(batch: dict[str, Any], probs: Any) -> dict[str, Any]:
    return landmark_rows(batch, probs, CUB_KP_REGRESSION)


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
                            "per-landmark regression on visible points, L2 error / image edge, mean over landmarks",
                            key="kp_err"),),
        dataset_options={"augment": "ganseg", "annotations": "keypoints"},
    )

    def evaluate(self, method: Any, splits: Mapping[str, Any], *, batch_size: int = 32, progress: bool = True,
                 device: Any = None) -> dict[str, float]:
        fit = collect_rows(method, splits["regression_fit"], _rows, batch_size=batch_size, progress=progress,
                           desc="regression_fit")
        test = collect_rows(method, splits["test"], _rows, batch_size=batch_size, progress=progress, desc="test")
        error = per_landmark_regression_error(fit["features"], fit["landmarks"], fit["visible"], test["features"],
                                              test["landmarks"], test["visible"], test["ref"], CUB_KP_REGRESSION)
        return {"kp_err": error}
