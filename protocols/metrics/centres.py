"""Part centres from a part segmentation: the features of every keypoint-regression protocol.

Coordinates follow ``datasets.base``: (x, y) = (column, row). ``part_centres`` works in
pixel-index units (pixel (r, c) sits at x = c, y = r); ``soft_argmax_centres_liu`` in Liu et al.'s
[0, 1] units.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from segbench.protocols.metrics._arrays import to_numpy, to_torch

# REFERENCE 1.1: the part-map normaliser gets +1e-6 (GANSeg test_seg.py:62, mask2keypoints).
CENTRE_EPS = 1e-6
# REFERENCE 4: Liu et al.'s part encoder emits 16x16 maps for 128x128 input, and their soft-argmax
# runs on that native map. The softmax over a 1-D marginal is temperature-sensitive (marginal sums
# grow with the map side), so the marginals are taken on a map area-pooled to this side.
LIU_GRID_SIZE = 16


def liu_grid_size(method: Any) -> int:
    """The side the ``liu`` soft-argmax works on for ``method``: its ``native_map_size`` when it
    reports one (liu_parts: image_size / 4 with the paper's layer3 stride 1, e.g. 32 at 128 px;
    / 8 with the released code's stride 2), else ``LIU_GRID_SIZE`` (the code's 16 x 16)."""
    native = getattr(method, "native_map_size", None)
    return int(native) if native else LIU_GRID_SIZE


def part_centres(part_probs: Any) -> np.ndarray:
    """Probability-weighted mean pixel coordinate of each part: [B, K+1, H, W] -> [B, K, 2].

    Reproduces GANSeg ``test_seg.py:59-86`` (``mask2keypoints``) and SCOPS
    ``evaluate_celebAWild.py``: drop background channel 0, divide each part map by
    (its sum + 1e-6), take the weighted mean of the pixel coordinates. Output is (x, y) =
    (column, row) in pixel-index units. GANSeg's grid is (row, col) on ``linspace(0, 128, 128)``,
    i.e. our coordinates times 128/127 in swapped order; a no-intercept linear regression is
    invariant to both (the ridge fallback aside), so the number is unchanged. An all-zero part map
    gets centre (0, 0), as in GANSeg. Tested against hand-computed maps (tests/metrics/test_centres.py).
    """
    probs = to_numpy(part_probs, np.float64)
    if probs.ndim != 4 or probs.shape[1] < 2:
        raise ValueError(f"part_probs must be [B, K+1, H, W] with K >= 1, got {probs.shape}")
    parts = probs[:, 1:]
    weights = parts / (parts.sum(axis=(2, 3), keepdims=True) + CENTRE_EPS)
    rows = np.arange(parts.shape[2], dtype=np.float64)
    cols = np.arange(parts.shape[3], dtype=np.float64)
    x = np.einsum("bkhw,w->bk", weights, cols)
    y = np.einsum("bkhw,h->bk", weights, rows)
    return np.stack([x, y], axis=-1)


def soft_argmax_centres_liu(part_probs: Any, grid_size: int | None = LIU_GRID_SIZE) -> np.ndarray:
    """Liu et al.'s soft-argmax centres of ALL K+1 channels: [B, K+1, H, W] -> [B, K+1, 2].

    Reproduces Liu et al. ``utils/soft_points.py:53-72`` (``get_expected_points_from_map`` with
    ``softmax=True``), REFERENCE 1.2 ``liu``: for each channel (background included) sum the
    probability map over columns to get the row marginal, softmax that 1-D marginal (the raw sums
    are the logits), and take the expectation of ``linspace(0, 1, H)``; likewise for x. Output is
    (x, y) in [0, 1], with pixel index i at i / (side - 1) as in the reference's ``linspace``.

    Assumption (documented in REFERENCE 4, not in 1.2): the reference runs this on the encoder's
    native 16x16 probability map, and the softmax temperature depends on that side, so the map is
    first area-pooled to ``grid_size`` x ``grid_size`` (``None`` keeps the given resolution). The
    protocols pass ``liu_grid_size(method)``: a method's own native map side where it reports one.
    Tested against an explicit per-channel loop (tests/metrics/test_centres.py).
    """
    probs = to_torch(part_probs)
    if probs.dim() != 4:
        raise ValueError(f"part_probs must be [B, K+1, H, W], got {tuple(probs.shape)}")
    if grid_size is not None and tuple(probs.shape[2:]) != (grid_size, grid_size):
        probs = F.adaptive_avg_pool2d(probs, grid_size)
    height, width = probs.shape[2:]
    row_weights = torch.softmax(probs.sum(dim=3), dim=2)  # [B, C, H]
    col_weights = torch.softmax(probs.sum(dim=2), dim=2)  # [B, C, W]
    y = (row_weights * torch.linspace(0, 1, height, dtype=probs.dtype)).sum(dim=2)
    x = (col_weights * torch.linspace(0, 1, width, dtype=probs.dtype)).sum(dim=2)
    return torch.stack([x, y], dim=-1).numpy()
