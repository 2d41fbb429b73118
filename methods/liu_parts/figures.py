"""Training figures of liu_parts: TPS pairs, cross reconstructions and argmax part maps (paper Fig. 2-3 style)."""
from __future__ import annotations

from pathlib import Path

import torch

from segbench.benchmark.figures import overlay_labels, save_png, tile_grid, upscale, upscale_factor
from segbench.methods.common.images import unit_to_uint8

COLUMNS = ("x1", "x2", "x1_hat", "x2_hat", "parts_x1", "parts_x2")


def pair_tiles(x1: torch.Tensor, x2: torch.Tensor, x1_hat: torch.Tensor, x2_hat: torch.Tensor,
               s1: torch.Tensor, s2: torch.Tensor, min_side: int = 128) -> list[torch.Tensor]:
    """Six uint8 [3, h, w] tiles per sample, in ``COLUMNS`` order: the two warped views, their cross
    reconstructions (x^1 = D(x2's appearance on x1's parts); the decoder's linear output clamped to
    [0, 1]) and the argmax part overlays of each view. Images [B,3,S,S] in [0,1]; probabilities
    [B,K+1,S,S] at the image size."""
    views = [unit_to_uint8(t.detach().float().cpu()) for t in (x1, x2, x1_hat, x2_hat)]
    s1, s2 = s1.detach().float().cpu(), s2.detach().float().cpu()
    num_parts = s1.shape[1] - 1
    factor = upscale_factor(*views[0].shape[-2:], min_side=min_side)
    tiles = []
    for i in range(views[0].shape[0]):
        row = [views[0][i], views[1][i], views[2][i], views[3][i],
               overlay_labels(views[0][i], s1[i].argmax(0), num_parts),
               overlay_labels(views[1][i], s2[i].argmax(0), num_parts)]
        tiles.extend(upscale(t, factor) for t in row)
    return tiles


def save_pair_grid(path: Path, x1: torch.Tensor, x2: torch.Tensor, x1_hat: torch.Tensor, x2_hat: torch.Tensor,
                   s1: torch.Tensor, s2: torch.Tensor) -> Path:
    """One row per sample: x1 | x2 | x^1 | x^2 | parts of x1 | parts of x2 (atomic PNG)."""
    return save_png(tile_grid(pair_tiles(x1, x2, x1_hat, x2_hat, s1, s2), columns=len(COLUMNS)), Path(path))
