"""Part centres against hand-computed maps and an explicit loop (REFERENCE 1.1 / 1.2 liu)."""
import numpy as np
import pytest
import torch

from segbench.protocols.metrics.centres import CENTRE_EPS, part_centres, soft_argmax_centres_liu


def _probs_with_parts(h, w, part_maps):
    """[1, K+1, h, w] with the given part maps and background = the rest."""
    parts = np.stack(part_maps).astype(np.float64)
    return np.concatenate([1 - parts.sum(0, keepdims=True), parts])[None]


def test_single_bright_pixel_gives_its_coordinate_as_x_col_y_row():
    """Golden: one pixel at row 2, col 5 of a 4x7 map -> (x, y) = (5, 2) up to the 1e-6 smoothing."""
    part = np.zeros((4, 7))
    part[2, 5] = 1.0
    centres = part_centres(_probs_with_parts(4, 7, [part]))
    np.testing.assert_allclose(centres[0, 0], [5 / (1 + CENTRE_EPS), 2 / (1 + CENTRE_EPS)], rtol=0, atol=1e-12)


def test_two_pixel_map_gives_midpoint_and_background_is_dropped():
    """Golden: pixels (r1,c0) and (r3,c4) with equal mass -> midpoint (2, 2); K=2 parts only."""
    a = np.zeros((5, 5))
    a[1, 0] = a[3, 4] = 0.5
    b = np.zeros((5, 5))
    b[4, 1] = 0.25  # mass need not be 1: each part map is normalised by its own sum
    centres = part_centres(_probs_with_parts(5, 5, [a, b]))
    assert centres.shape == (1, 2, 2)
    np.testing.assert_allclose(centres[0], [[2, 2], [1, 4]], atol=1e-4)


def test_torch_and_numpy_inputs_agree_and_empty_part_is_origin():
    """GANSeg mask2keypoints: an all-zero part map gives 0 / (0 + 1e-6) = centre (0, 0)."""
    probs = torch.rand(3, 4, 6, 9).softmax(dim=1)
    probs[1, 2] = 0
    np.testing.assert_allclose(part_centres(probs), part_centres(probs.numpy()))
    np.testing.assert_array_equal(part_centres(probs)[1, 1], [0, 0])


def test_part_centres_matches_explicit_loop():
    """Independent loop over parts and pixels (SCOPS-style weighted mean)."""
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(4), size=(2, 5, 6)).transpose(0, 3, 1, 2)
    got = part_centres(probs)
    for b in range(2):
        for k in range(1, 4):
            m = probs[b, k]
            total = m.sum() + CENTRE_EPS
            x = sum(m[r, c] * c for r in range(5) for c in range(6)) / total
            y = sum(m[r, c] * r for r in range(5) for c in range(6)) / total
            np.testing.assert_allclose(got[b, k - 1], [x, y], rtol=1e-12)


def _liu_loop(probs):
    """Liu et al. get_expected_points_from_map written as a per-channel loop."""
    b_, c_, h, w = probs.shape
    out = np.zeros((b_, c_, 2))
    for b in range(b_):
        for c in range(c_):
            row_marg = probs[b, c].sum(axis=1)
            col_marg = probs[b, c].sum(axis=0)
            pr = np.exp(row_marg - row_marg.max()); pr /= pr.sum()
            pc = np.exp(col_marg - col_marg.max()); pc /= pc.sum()
            out[b, c] = [(pc * np.linspace(0, 1, w)).sum(), (pr * np.linspace(0, 1, h)).sum()]
    return out


def test_liu_centres_match_loop_at_native_resolution_with_all_channels():
    rng = np.random.default_rng(1)
    probs = rng.dirichlet(np.ones(3), size=(2, 16, 16)).transpose(0, 3, 1, 2)
    got = soft_argmax_centres_liu(probs)
    assert got.shape == (2, 3, 2)  # background channel kept
    np.testing.assert_allclose(got, _liu_loop(probs), rtol=1e-12)


def test_liu_centres_pool_to_grid_and_uniform_map_is_centre():
    """A 64x64 map is area-pooled to 16x16 first; a uniform channel sits at (0.5, 0.5)."""
    rng = np.random.default_rng(2)
    probs = rng.dirichlet(np.ones(3), size=(1, 64, 64)).transpose(0, 3, 1, 2)
    pooled = probs.reshape(1, 3, 16, 4, 16, 4).mean(axis=(3, 5))
    np.testing.assert_allclose(soft_argmax_centres_liu(probs), _liu_loop(pooled), rtol=1e-12)
    np.testing.assert_allclose(soft_argmax_centres_liu(probs, grid_size=None), _liu_loop(probs), rtol=1e-12)
    uniform = np.full((1, 2, 16, 16), 0.5)
    np.testing.assert_allclose(soft_argmax_centres_liu(uniform), 0.5, atol=1e-12)


def test_liu_centre_orientation_x_is_column():
    """Mass on the right-hand columns pulls x (not y) towards 1."""
    probs = np.zeros((1, 2, 16, 16))
    probs[0, 1, :, 12:] = 1.0
    probs[0, 0] = 1 - probs[0, 1]
    x, y = soft_argmax_centres_liu(probs)[0, 1]
    assert x > 0.75 and y == pytest.approx(0.5)
