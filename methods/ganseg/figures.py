"""Sample grids of generated images with their points and masks (supplement Figures 8-11 style)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from segbench.benchmark.figures import PALETTE, grid, overlay


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] float images -> uint8 (same shape)."""
    return ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def _pixels(coords: np.ndarray, size: int, scale: int) -> np.ndarray:
    """[-1,1] (x, y) coordinates -> pixel positions in a tile upscaled by ``scale``."""
    return ((coords + 1) * size / 2) * scale


def _dots(draw: ImageDraw.ImageDraw, xy: np.ndarray, colour: tuple[int, int, int], r: float) -> None:
    for x, y in xy:
        draw.ellipse([x - r, y - r, x + r, y + r], fill=colour, outline=(0, 0, 0))


def sample_tiles(images: torch.Tensor, masks: torch.Tensor, points: torch.Tensor | None,
                 centres: torch.Tensor | None, n_per: int, min_side: int = 128) -> list[np.ndarray]:
    """Two tiles per sample: the image with its n_per x K points, and the argmax mask overlay
    with the part centres. images [-1,1] [B,3,R,R], masks [B,K+1,R,R]."""
    imgs = to_uint8(images).permute(0, 2, 3, 1).numpy()
    masks = masks.detach().float().cpu().numpy()
    size = imgs.shape[1]
    scale = max(1, min_side // size)
    tiles = []
    for i in range(imgs.shape[0]):
        pair = []
        for kind in ("points", "masks"):
            base = imgs[i] if kind == "points" else overlay(imgs[i], masks[i])
            im = Image.fromarray(np.kron(base, np.ones((scale, scale, 1), np.uint8)))
            draw = ImageDraw.Draw(im)
            if kind == "points" and points is not None:
                pts = _pixels(points[i].detach().cpu().numpy(), size, scale)
                for k in range(pts.shape[0] // n_per):
                    _dots(draw, pts[k * n_per:(k + 1) * n_per], tuple(int(c) for c in PALETTE[k % len(PALETTE)]), 1.5)
            if kind == "masks" and centres is not None:
                ctr = _pixels(centres[i].detach().cpu().numpy(), size, scale)
                for k, xy in enumerate(ctr):
                    _dots(draw, xy[None], tuple(int(c) for c in PALETTE[k % len(PALETTE)]), 3)
            pair.append(np.asarray(im))
        tiles.append(np.concatenate(pair, axis=1))
    return tiles


def save_sample_grid(path: Path, images: torch.Tensor, masks: torch.Tensor, points: torch.Tensor | None,
                     centres: torch.Tensor | None, n_per: int, columns: int = 4) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid(sample_tiles(images, masks, points, centres, n_per), columns=columns)).save(path)
    return path
