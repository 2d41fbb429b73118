"""Sample grids of generated images with their points and masks (supplement Figures 8-11 style)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from segbench.benchmark.figures import (colour, draw_dots, overlay_labels, save_png, tile_grid, upscale,
                                        upscale_factor)
from segbench.methods.common.images import signed_to_uint8


def _pixels(coords: np.ndarray, size: int, scale: int) -> np.ndarray:
    """[-1,1] (x, y) coordinates -> pixel positions in a tile upscaled by ``scale``."""
    return ((coords + 1) * size / 2) * scale


def _sample_tiles(images: torch.Tensor, masks: torch.Tensor, points: torch.Tensor | None,
                  centres: torch.Tensor | None, n_per: int, min_side: int = 128) -> list[torch.Tensor]:
    imgs = signed_to_uint8(images)
    masks = masks.detach().float().cpu()
    size = imgs.shape[-1]
    scale = upscale_factor(*imgs.shape[-2:], min_side=min_side)
    num_parts = masks.shape[1] - 1
    tiles = []
    for i in range(imgs.shape[0]):
        left = upscale(imgs[i], scale)
        if points is not None:
            pts = _pixels(points[i].detach().float().cpu().numpy(), size, scale)
            for k in range(pts.shape[0] // n_per):
                left = draw_dots(left, pts[k * n_per:(k + 1) * n_per], colour(k), radius=1)
        right = upscale(overlay_labels(imgs[i], masks[i].argmax(0), num_parts), scale)
        if centres is not None:
            for k, xy in enumerate(_pixels(centres[i].detach().float().cpu().numpy(), size, scale)):
                right = draw_dots(right, xy[None], colour(k), radius=3)
        tiles.append(torch.cat([left, right], dim=2))
    return tiles


def sample_tiles(images: torch.Tensor, masks: torch.Tensor, points: torch.Tensor | None,
                 centres: torch.Tensor | None, n_per: int, min_side: int = 128) -> list[np.ndarray]:
    """Two tiles per sample: the image with its n_per x K points, and the argmax mask overlay
    with the part centres. images [-1,1] [B,3,R,R], masks [B,K+1,R,R]. Returns uint8 HWC arrays."""
    return [t.permute(1, 2, 0).numpy() for t in _sample_tiles(images, masks, points, centres, n_per, min_side)]


def save_sample_grid(path: Path, images: torch.Tensor, masks: torch.Tensor, points: torch.Tensor | None,
                     centres: torch.Tensor | None, n_per: int, columns: int = 4) -> Path:
    return save_png(tile_grid(_sample_tiles(images, masks, points, centres, n_per), columns=columns), Path(path))
