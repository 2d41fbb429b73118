"""``faces_wild``: the wild-CelebA landmark protocol (GANSeg Tab.1 "wild") on the real faces of
``faces_wild``: whole images resized to 128x128, five MAFL-style landmarks, part centres ->
one joint linear map fitted on the ``fit`` identities -> error / inter-ocular distance on the
held-out identities (REFERENCE 1.2). The method trains on the same ``fit`` images, as GANSeg
trains on CelebA and fits the regressor on MAFL training; no test identity is seen by either.
"""
from __future__ import annotations

from typing import Any, Mapping

from segbench.protocols.landmark_eval import landmark_error
from segbench.protocols.metrics.landmarks import REGRESSION_VARIANTS
from segbench.protocols.spec import MetricSpec, Protocol, ProtocolSpec


class FacesWildProtocol(Protocol):
    spec = ProtocolSpec(
        name="faces_wild",
        version="1",
        reproduces="GANSeg Tab.1 wild-CelebA protocol, on real faces available here",
        dataset="faces_wild",
        splits={"fit": "fit", "regression_fit": "fit", "test": "test"},
        image_size=128,
        needs=frozenset({"parts"}),
        num_parts=8,
        metrics=(MetricSpec("landmark_err_{regression}_pct", False, "test", "%",
                            "landmark regression error / inter-ocular distance, mean over landmarks then images"),),
        options={"regression": REGRESSION_VARIANTS},
    )

    def evaluate(self, method: Any, splits: Mapping[str, Any], *, batch_size: int = 32,
                 progress: bool = True) -> list[dict[str, Any]]:
        variant = self.options["regression"]
        error, n_test = landmark_error(method, splits, variant, batch_size=batch_size, progress=progress)
        return [{"metric": f"landmark_err_{variant}_pct", "split": "test", "value": error, "n_eval": n_test}]
