"""The CelebA landmark protocols of GANSeg Tab.1 (REFERENCE 1.2): part centres on the
128x128 images -> one joint linear map fitted on ``regression_fit`` (MAFL training) -> error on
``test`` (MAFL testing) / inter-ocular distance, mean over the 5 landmarks then the images,
in percent. The regression variant is an option (``no_intercept``, GANSeg's, is the default) and
is part of the metric name.

``celeba_wild`` asks for K=8 (the "Wild (K=8)" column); the K=4 column is the same protocol run
with ``--set num_parts=4``. ``celeba_aligned`` asks for K=10.
"""
from __future__ import annotations

from typing import Any, Mapping

from segbench.protocols.landmark_eval import landmark_error
from segbench.protocols.metrics.landmarks import REGRESSION_VARIANTS
from segbench.protocols.spec import MetricSpec, Protocol, ProtocolSpec

LANDMARK_METRIC = MetricSpec("landmark_err_{regression}_pct", False, "test", "%",
                             "landmark regression error / inter-ocular distance, mean over landmarks then images")
CELEBA_SPLITS = {"fit": "train", "regression_fit": "regression_fit", "test": "test"}


class _CelebALandmarks(Protocol):
    def evaluate(self, method: Any, splits: Mapping[str, Any], *, batch_size: int = 32,
                 progress: bool = True) -> list[dict[str, Any]]:
        variant = self.options["regression"]
        error, n_test = landmark_error(method, splits, variant, batch_size=batch_size, progress=progress)
        return [{"metric": f"landmark_err_{variant}_pct", "split": "test", "value": error, "n_eval": n_test}]


class CelebAWildProtocol(_CelebALandmarks):
    spec = ProtocolSpec(
        name="celeba_wild",
        version="1",
        reproduces="GANSeg Tab.1 Wild (K=8; K=4 with --set num_parts=4)",
        dataset="celeba_wild",
        splits=CELEBA_SPLITS,
        image_size=128,
        needs=frozenset({"parts"}),
        num_parts=8,
        metrics=(LANDMARK_METRIC,),
        options={"regression": REGRESSION_VARIANTS},
    )


class CelebAAlignedProtocol(_CelebALandmarks):
    spec = ProtocolSpec(
        name="celeba_aligned",
        version="1",
        reproduces="GANSeg Tab.1 Aligned (K=10)",
        dataset="celeba_aligned",
        splits=CELEBA_SPLITS,
        image_size=128,
        needs=frozenset({"parts"}),
        num_parts=10,
        metrics=(LANDMARK_METRIC,),
        options={"regression": REGRESSION_VARIANTS},
    )
