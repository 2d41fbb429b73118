"""Figures of the latent-direction method: the shift strip (the paper's Figure 3) and
generated image/mask pairs (what the segmenter trains on)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from segbench.benchmark.figures import GRID_PAD, overlay_labels, save_png, tile_grid
from segbench.methods.common.images import signed_to_uint8

TILE = 96  # figure tiles are upscaled to this side so 32-64 px generators stay readable


def _resize(x: torch.Tensor) -> torch.Tensor:
    """``[n,c,h,w]`` -> ``[n,c,TILE,TILE]``, nearest (keeps pixels visible)."""
    return F.interpolate(x, size=(TILE, TILE), mode="nearest")


def _to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] images ``[n,3,h,w]`` -> uint8 ``[n,3,TILE,TILE]``."""
    return _resize(signed_to_uint8(images))


def _mask_tile(mask: torch.Tensor) -> torch.Tensor:
    """A binary mask ``[h,w]`` -> white-on-black uint8 ``[3,TILE,TILE]``."""
    m = (mask.detach().cpu() > 0).to(torch.uint8) * 255
    return _resize(m[None, None])[0].expand(3, -1, -1)


def _with_header(image: torch.Tensor, labels: Sequence[str], pad: int = GRID_PAD) -> Image.Image:
    """Prepend a row of column labels (one per tile column) to a uint8 ``[3,H,W]`` grid."""
    header = 14
    out = Image.new("RGB", (image.shape[2], image.shape[1] + header), (255, 255, 255))
    out.paste(Image.fromarray(image.permute(1, 2, 0).numpy()), (0, header))
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
    labels = ["z" if eps == 0 else f"z+{abs(eps):g}v_{'d' if eps < 0 else 'l'}" for eps in shifts] + ["mask"]
    columns = [_to_uint8(generator.generate(z + abs(eps) * (v_dark if eps < 0 else v_light))) for eps in shifts]
    masks = masks_fn(z)
    tiles: list[torch.Tensor] = []
    for i in range(n_codes):
        tiles += [col[i] for col in columns] + [_mask_tile(masks[i])]
    save_png(_with_header(tile_grid(tiles, columns=len(shifts) + 1), labels), path)


def save_pair_grid(images: torch.Tensor, masks: torch.Tensor, path: Path, *, columns: int = 8) -> None:
    """Image / mask-overlay pairs side by side (``images`` in [0, 1], ``masks`` long ``[n,h,w]``)."""
    tiles = []
    big_masks = _resize(masks.detach().cpu()[:, None].to(torch.uint8))[:, 0]
    for image, mask in zip(_to_uint8(images * 2 - 1), big_masks):
        tiles += [image, overlay_labels(image, (mask > 0).long(), 1)]
    save_png(tile_grid(tiles, columns=columns), path)
