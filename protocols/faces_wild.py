"""``faces_wild``: the wild-CelebA landmark protocol (GANSeg Tab.1 "wild") on the real faces of
``faces_wild``: whole images resized to 128x128, five MAFL-style landmarks, part centres ->
one joint linear map fitted on the ``fit`` identities -> error / inter-ocular distance on the
held-out identities (REFERENCE 1.2). The method trains on the same ``fit`` images, as GANSeg
trains on CelebA and fits the regressor on MAFL training; no test identity is seen by either.
"""
from __future__ import annotations

from segbench.protocols.landmark_eval import LANDMARK_METRIC, LandmarkProtocol
from segbench.protocols.metrics.landmarks import REGRESSION_VARIANTS
from segbench.protocols.spec import ProtocolSpec


class FacesWildProtocol(LandmarkProtocol):
    spec = ProtocolSpec(
        name="faces_wild",
        version="1",
        reproduces="GANSeg Tab.1 wild-CelebA protocol, on real faces available here",
        dataset="faces_wild",
        splits={"fit": "fit", "regression_fit": "fit", "test": "test"},
        image_size=128,
        needs=frozenset({"parts"}),
        num_parts=8,
        metrics=(LANDMARK_METRIC,),
        options={"regression": REGRESSION_VARIANTS},
    )
