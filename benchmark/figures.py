"""PNG figures of a run: prediction overlays on test images and sample grids."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from segbench.methods.base import SAMPLES
from segbench.protocols.metrics.centres import part_centres

# Distinct colours for up to 16 parts (background is left uncoloured).
PALETTE = np.array([
    [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48], [145, 30, 180],
    [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 212], [0, 128, 128], [220, 190, 255],
    [170, 110, 40], [255, 250, 200], [128, 0, 0], [170, 255, 195]], dtype=np.float32)


def grid(tiles: list[np.ndarray], columns: int, pad: int = 2) -> np.ndarray:
    """Stack equally sized uint8 HWC tiles into a grid with white padding."""
    h, w, _ = tiles[0].shape
    rows = (len(tiles) + columns - 1) // columns
    out = np.full((rows * (h + pad) + pad, columns * (w + pad) + pad, 3), 255, np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, columns)
        out[pad + r * (h + pad):pad + r * (h + pad) + h, pad + c * (w + pad):pad + c * (w + pad) + w] = tile
    return out


def overlay(image: np.ndarray, part_probs: np.ndarray, alpha: float = 0.55) -> np.ndarray:
    """Blend the argmax part colour over a uint8 HWC image; background stays as it is."""
    labels = part_probs.argmax(0)
    colours = PALETTE[(labels - 1) % len(PALETTE)]
    blended = image.astype(np.float32)
    fg = labels > 0
    blended[fg] = (1 - alpha) * blended[fg] + alpha * colours[fg]
    return blended.clip(0, 255).astype(np.uint8)


def _upscale(tile: np.ndarray, min_side: int = 128) -> tuple[np.ndarray, int]:
    factor = max(1, min_side // min(tile.shape[:2]))
    return np.kron(tile, np.ones((factor, factor, 1), np.uint8)), factor


def save_overlays(method, split, path: Path, n: int = 16) -> None:
    n = min(n, len(split))
    images = torch.stack([torch.from_numpy(split.image(i)).permute(2, 0, 1).float() / 255 for i in range(n)])
    probs = method.predict(images).part_probs.numpy()
    centres = part_centres(probs)
    tiles = []
    for i in range(n):
        tile, factor = _upscale(overlay(split.image(i), probs[i]))
        im = Image.fromarray(tile)
        draw = ImageDraw.Draw(im)
        for k, (x, y) in enumerate(centres[i]):
            x, y = (x + 0.5) * factor, (y + 0.5) * factor
            colour = tuple(int(c) for c in PALETTE[k % len(PALETTE)])
            draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colour, outline=(0, 0, 0))
        tiles.append(np.asarray(im))
    Image.fromarray(grid(tiles, columns=4)).save(path)


def save_sample_grid(method, path: Path, n: int = 16, seed: int = 0) -> None:
    samples = method.sample(n, seed=seed).permute(0, 2, 3, 1).numpy()
    Image.fromarray(grid([_upscale(s)[0] for s in samples], columns=4)).save(path)


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
