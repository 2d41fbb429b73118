"""Figures: produced under their names, valid PNGs of the expected size, byte-identical on rerun,
written atomically (no temporary files left), and the overlay colours the predicted parts."""
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from segbench.benchmark import figures
from segbench.methods.base import SAMPLES
from segbench.methods.ganseg.figures import save_sample_grid as ganseg_sample_grid
from segbench.methods.latent_direction.figures import save_pair_grid, save_shift_strip

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class _Split:
    def __init__(self, n=20, size=32):
        rng = np.random.default_rng(1)
        self.images = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)

    def __len__(self):
        return len(self.images)

    def image(self, i):
        return self.images[i]


class _Method:
    """Part k+1 is the k-th vertical band of the image; samples are seeded noise."""
    produces = frozenset({"parts", SAMPLES})

    def predict(self, images):
        b, _, h, w = images.shape
        labels = (torch.arange(w) * 3 // w + 1).expand(b, h, w)
        return SimpleNamespace(part_probs=torch.nn.functional.one_hot(labels, 4).permute(0, 3, 1, 2).float())

    def sample(self, n, *, seed):
        return torch.randint(0, 256, (n, 3, 32, 32), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


class _Generator:
    def sample_z(self, n, seed):
        return torch.randn(n, 8, generator=torch.Generator().manual_seed(seed))

    def generate(self, z):
        return torch.tanh(z[:, :3, None, None].expand(-1, 3, 32, 32) + torch.linspace(-1, 1, 32))


def _grid_side(n_tiles, tile, pad=2):
    return n_tiles * (tile + pad) + pad


def _check_png(path, width, height):
    assert path.read_bytes()[:8] == PNG_MAGIC
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.format == "PNG" and im.mode == "RGB" and im.size == (width, height)
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


def _make_all(directory):
    written = figures.save_run_figures(_Method(), _Split(), directory, seed=3)
    g = torch.Generator().manual_seed(0)
    images = torch.rand(5, 3, 32, 32, generator=g) * 2 - 1
    masks = torch.rand(5, 4, 32, 32, generator=g)
    points = torch.rand(5, 6, 2, generator=g) * 2 - 1
    centres = torch.rand(5, 3, 2, generator=g) * 2 - 1
    written.append(ganseg_sample_grid(directory / "ganseg_samples_final.png", images, masks, points, centres, 2))
    pair_images = torch.rand(4, 3, 32, 32, generator=g)
    pair_masks = (torch.rand(4, 32, 32, generator=g) > 0.5).long()
    save_pair_grid(pair_images, pair_masks, directory / "generated_pairs.png")
    v = torch.ones(8)
    save_shift_strip(_Generator(), v, -v, lambda z: z[:, :1, None].expand(-1, 32, 32) > 0,
                     directory / "latent_shift_strip.png", [-4, 0, 4], seed=0)
    return written + [directory / "generated_pairs.png", directory / "latent_shift_strip.png"]


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    first, second = tmp_path_factory.mktemp("figs1"), tmp_path_factory.mktemp("figs2")
    return _make_all(first), _make_all(second)


def test_figures_are_pngs_of_the_expected_size(made):
    paths = {p.name: p for p in made[0]}
    assert set(paths) == {"test_overlays.png", "samples.png", "ganseg_samples_final.png", "generated_pairs.png",
                          "latent_shift_strip.png"}
    side = _grid_side(4, 128)  # 16 tiles of 32 px upscaled x4, 4 columns
    _check_png(paths["test_overlays.png"], side, side)
    _check_png(paths["samples.png"], side, side)
    # 5 samples: (image | overlay) tiles of 128 x 256 in 4 columns, 2 rows
    _check_png(paths["ganseg_samples_final.png"], _grid_side(4, 256), _grid_side(2, 128))
    # 4 pairs = 8 tiles of 96 px in 8 columns
    _check_png(paths["generated_pairs.png"], _grid_side(8, 96), _grid_side(1, 96))
    # 4 codes x (3 shifts + mask) of 96 px under a 14 px header
    _check_png(paths["latent_shift_strip.png"], _grid_side(4, 96), _grid_side(4, 96) + 14)


def test_figures_are_deterministic(made):
    for a, b in zip(*made):
        assert a.name == b.name and a.read_bytes() == b.read_bytes(), a.name


def test_overlay_colours_parts_and_leaves_background():
    image = np.full((4, 6, 3), 100, np.uint8)
    probs = np.zeros((3, 4, 6), np.float32)
    probs[0, :, :2] = probs[1, :, 2:4] = probs[2, :, 4:] = 1
    out = figures.overlay(image, probs, alpha=0.5)
    assert (out[:, :2] == 100).all()
    expected = (0.5 * 100 + 0.5 * figures.PALETTE[:2]).astype(np.uint8)
    assert (out[:, 2:4] == expected[0]).all() and (out[:, 4:] == expected[1]).all()


def test_upscale_is_nearest_and_grid_pads_white():
    tile = torch.arange(12, dtype=torch.uint8).reshape(3, 2, 2)
    up = figures.upscale(tile, 3)
    assert up.shape == (3, 6, 6) and torch.equal(up[:, ::3, ::3], tile) and torch.equal(up[:, 2, 2], tile[:, 0, 0])
    g = figures.grid([np.zeros((2, 2, 3), np.uint8)] * 3, columns=2)
    assert g.shape == (2 * 4 + 2, 2 * 4 + 2, 3) and g[0].min() == 255 and g[-4:, -4:].min() == 255
    lone = figures.grid([np.zeros((2, 2, 3), np.uint8)], columns=4)
    assert lone.shape == (6, 6, 3) and lone[0].min() == 255 and lone[2:4, 2:4].max() == 0


def test_save_png_replaces_atomically(tmp_path):
    path = tmp_path / "f.png"
    figures.save_png(np.zeros((2, 2, 3), np.uint8), path)
    figures.save_png(torch.full((3, 5, 4), 7, dtype=torch.uint8), path)
    with Image.open(path) as im:
        assert im.size == (4, 5) and np.asarray(im).max() == 7
    assert [p.name for p in tmp_path.iterdir()] == ["f.png"]
