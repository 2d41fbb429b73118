"""The CelebA landmark protocols of GANSeg Tab.1 (REFERENCE 1.2): part centres on the
128x128 images -> one joint linear map fitted on ``regression_fit`` (MAFL training) -> error on
``test`` (MAFL testing) / inter-ocular distance, mean over the 5 landmarks then the images,
in percent. The regression variant is an option (``no_intercept``, GANSeg's, is the default) and
is part of the metric name.

``celeba_wild`` asks for K=8 (the "Wild (K=8)" column); the K=4 column is the same protocol run
with ``--set num_parts=4``. ``celeba_aligned`` asks for K=10.
"""
from __future__ import annotations

from segbench.protocols.landmark_eval import LANDMARK_METRIC, LandmarkProtocol
from segbench.protocols.metrics.landmarks import REGRESSION_VARIANTS
from segbench.protocols.spec import ProtocolSpec

CELEBA_SPLITS = {"fit": "train", "regression_fit": "regression_fit", "test": "test"}


class CelebAWildProtocol(LandmarkProtocol):
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


class CelebAAlignedProtocol(LandmarkProtocol):
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
