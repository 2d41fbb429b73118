"""PNG figures of a run: prediction overlays on test images and sample grids.

Drawing is torchvision's (``make_grid``, ``draw_segmentation_masks``, ``draw_keypoints``), upscaling
is ``F.interpolate(mode="nearest")``, and every PNG is written atomically (:func:`save_png`), so a
killed run never leaves a truncated figure. The methods' figure modules build on the helpers here.
"""
from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.utils import draw_keypoints, draw_segmentation_masks, make_grid

from segbench.methods.base import SAMPLES
from segbench.protocols.metrics.centres import part_centres

# Distinct colours for up to 16 parts (background is left uncoloured).
PALETTE = np.array([
    [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48], [145, 30, 180],
    [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 212], [0, 128, 128], [220, 190, 255],
    [170, 110, 40], [255, 250, 200], [128, 0, 0], [170, 255, 195]], dtype=np.float32)
GRID_PAD = 2
WHITE = 255


def colour(k: int) -> tuple[int, int, int]:
    """RGB of the k-th part (0-based, background excluded), cycling through ``PALETTE``."""
    return tuple(int(c) for c in PALETTE[k % len(PALETTE)])  # type: ignore[return-value]


def save_png(image: torch.Tensor | np.ndarray | Image.Image, path: Path) -> Path:
    """Write a uint8 ``[3,H,W]`` tensor (or HWC array, or PIL image) as a PNG through a temporary file
    in the same folder and ``os.replace``: readers see the previous file or the complete new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().permute(1, 2, 0).numpy()
    if not isinstance(image, Image.Image):
        image = Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8))
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "xb") as fh:
            image.save(fh, format="PNG")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def to_chw(image: np.ndarray) -> torch.Tensor:
    """uint8 HWC array -> uint8 ``[3,H,W]`` tensor."""
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)


def upscale(images: torch.Tensor, factor: int) -> torch.Tensor:
    """Nearest-neighbour upscaling of uint8 ``[B,C,H,W]`` (or ``[C,H,W]``) by an integer factor."""
    if factor == 1:
        return images
    batch = images[None] if images.dim() == 3 else images
    out = F.interpolate(batch, size=(batch.shape[-2] * factor, batch.shape[-1] * factor), mode="nearest")
    return out[0] if images.dim() == 3 else out


def upscale_factor(height: int, width: int, min_side: int = 128) -> int:
    return max(1, min_side // min(height, width))


def tile_grid(tiles: Sequence[torch.Tensor] | torch.Tensor, columns: int, pad: int = GRID_PAD) -> torch.Tensor:
    """Equally sized uint8 ``[3,h,w]`` tiles -> one uint8 ``[3,H,W]`` grid with white padding."""
    if len(tiles) == 1:  # make_grid returns a lone tile unpadded; pad it like any grid
        return F.pad(tiles[0], (pad, pad, pad, pad), value=WHITE)
    return make_grid(list(tiles) if not isinstance(tiles, torch.Tensor) else tiles, nrow=columns,
                     padding=pad, pad_value=WHITE)


def grid(tiles: list[np.ndarray], columns: int, pad: int = GRID_PAD) -> np.ndarray:
    """Stack equally sized uint8 HWC tiles into a grid with white padding."""
    return tile_grid([to_chw(t) for t in tiles], columns, pad).permute(1, 2, 0).numpy()


def overlay_labels(image: torch.Tensor, labels: torch.Tensor, num_parts: int, alpha: float = 0.55) -> torch.Tensor:
    """Blend part k's colour (``colour(k - 1)``) over the pixels labelled k in 1..num_parts of a uint8
    ``[3,H,W]`` image; label 0 (background) stays as it is."""
    if num_parts < 1:
        return image
    masks = labels[None] == torch.arange(1, num_parts + 1, device=labels.device)[:, None, None]
    return draw_segmentation_masks(image, masks, alpha=alpha, colors=[colour(k) for k in range(num_parts)])


def overlay(image: np.ndarray, part_probs: np.ndarray, alpha: float = 0.55) -> np.ndarray:
    """Blend the argmax part colour over a uint8 HWC image; background stays as it is."""
    probs = torch.as_tensor(np.asarray(part_probs))
    out = overlay_labels(to_chw(image), probs.argmax(0), probs.shape[0] - 1, alpha)
    return out.permute(1, 2, 0).numpy()


def draw_dots(image: torch.Tensor, xy: torch.Tensor | np.ndarray, rgb: tuple[int, int, int],
              radius: int) -> torch.Tensor:
    """Filled dots of colour ``rgb`` with a one-pixel black rim at pixel positions ``xy`` ``[N,2]`` (x, y)."""
    points = torch.as_tensor(np.asarray(xy, dtype=np.float64)).round().reshape(1, -1, 2)
    if points.shape[1] == 0:
        return image
    image = draw_keypoints(image, points, colors=(0, 0, 0), radius=radius + 1)
    return draw_keypoints(image, points, colors=rgb, radius=radius)


def save_overlays(method, split, path: Path, n: int = 16) -> None:
    n = min(n, len(split))
    images = torch.stack([to_chw(split.image(i)) for i in range(n)])
    probs = method.predict(images.float() / 255).part_probs.detach().cpu()
    centres = torch.as_tensor(part_centres(probs))
    num_parts = probs.shape[1] - 1
    factor = upscale_factor(*images.shape[-2:])
    tiles = []
    for i, labels in enumerate(probs.argmax(1)):
        tile = upscale(overlay_labels(images[i], labels, num_parts), factor)
        for k, xy in enumerate(centres[i]):
            tile = draw_dots(tile, (xy[None] + 0.5) * factor, colour(k), radius=3)
        tiles.append(tile)
    save_png(tile_grid(tiles, columns=4), path)


def save_sample_grid(method, path: Path, n: int = 16, seed: int = 0) -> None:
    samples = method.sample(n, seed=seed)
    save_png(tile_grid(upscale(samples, upscale_factor(*samples.shape[-2:])), columns=4), path)


def save_run_figures(method, test_split, directory: Path, seed: int = 0) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    if "parts" in method.produces:
        save_overlays(method, test_split, directory / "test_overlays.png")
        written.append(directory / "test_overlays.png")
    if SAMPLES in method.produces:
        save_sample_grid(method, directory / "samples.png", seed=seed)
        written.append(directory / "samples.png")
    return written
