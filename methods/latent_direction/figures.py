"""Figures of the latent-direction method: the shift strip (the paper's Figure 3) and
generated image/mask pairs (what the segmenter trains on)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw

from segbench.benchmark.figures import grid, overlay

TILE = 96  # figure tiles are upscaled to this side so 32-64 px generators stay readable


def _to_uint8(images: torch.Tensor) -> list[np.ndarray]:
    """[-1, 1] images ``[n,3,h,w]`` -> uint8 HWC tiles at ``TILE`` px (nearest, keeps pixels visible)."""
    x = ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    tiles = []
    for t in x.permute(0, 2, 3, 1).numpy():
        tiles.append(np.asarray(Image.fromarray(t).resize((TILE, TILE), Image.NEAREST)))
    return tiles


def _mask_tile(mask: torch.Tensor) -> np.ndarray:
    m = (mask.numpy().astype(np.uint8) * 255)
    return np.repeat(np.asarray(Image.fromarray(m).resize((TILE, TILE), Image.NEAREST))[..., None], 3, axis=2)


def _with_header(image: np.ndarray, labels: Sequence[str], pad: int = 2) -> Image.Image:
    """Prepend a row of column labels (one per tile column)."""
    header = 14
    out = Image.new("RGB", (image.shape[1], image.shape[0] + header), (255, 255, 255))
    out.paste(Image.fromarray(image), (0, header))
    draw = ImageDraw.Draw(out)
    for c, label in enumerate(labels):
        draw.text((pad + c * (TILE + pad) + 4, 1), label, fill=(0, 0, 0))
    return out


@torch.no_grad()
def save_shift_strip(generator: Any, v_light: torch.Tensor, v_dark: torch.Tensor, masks_fn: Any,
                     path: Path, shifts: Sequence[float], *, n_codes: int = 4, seed: int = 0) -> None:
    """Rows of G(z + eps v_d) for the negative shifts, G(z), G(z + eps v_l) for the positive ones,
    then the mask of the method's rule (Figure 3 of the paper: -8 ... 8 then the mask)."""
    z = generator.sample_z(n_codes, seed)
    tiles: list[np.ndarray] = []
    labels = ["z" if eps == 0 else f"z+{abs(eps):g}v_{'d' if eps < 0 else 'l'}" for eps in shifts] + ["mask"]
    columns = [generator.generate(z + abs(eps) * (v_dark if eps < 0 else v_light)) for eps in shifts]
    masks = masks_fn(z)
    for i in range(n_codes):
        tiles += [_to_uint8(col[i:i + 1])[0] for col in columns] + [_mask_tile(masks[i])]
    _with_header(grid(tiles, columns=len(shifts) + 1), labels).save(path)


def save_pair_grid(images: torch.Tensor, masks: torch.Tensor, path: Path, *, columns: int = 8) -> None:
    """Image / mask-overlay pairs side by side (``images`` in [0, 1], ``masks`` long ``[n,h,w]``)."""
    tiles = []
    for image, tile in zip(_to_uint8(images * 2 - 1), masks):
        mask = np.asarray(Image.fromarray(tile.numpy().astype(np.uint8)).resize((TILE, TILE), Image.NEAREST))
        probs = np.stack([1 - mask, mask]).astype(np.float32)
        tiles += [image, overlay(image, probs)]
    Image.fromarray(grid(tiles, columns=columns)).save(path)
