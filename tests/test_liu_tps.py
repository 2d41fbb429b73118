"""liu_parts TPS warps (spec §2.1): hand-computed grid values, identity, seeding, validity mask."""
import math

import pytest
import torch
import torch.nn.functional as F

from segbench.methods.liu_parts.tps import TPSWarp, tps_kernel

pytestmark = pytest.mark.usefixtures("one_thread")


def U(r2: float) -> float:
    """r^2 log r^2 with r^2 clipped at 1e-8, by hand."""
    r2 = max(r2, 1e-8)
    return r2 * math.log(r2)


def test_kernel_function_values():
    r2 = torch.tensor([0.0, 1.0, 2.0, 8.0], dtype=torch.float64)
    expected = [1e-8 * math.log(1e-8), 0.0, 2 * math.log(2), 8 * math.log(8)]
    assert torch.allclose(tps_kernel(r2), torch.tensor(expected, dtype=torch.float64), rtol=0, atol=1e-12)


def test_grid_matches_hand_computation_2x2_controls():
    # 2x2 control points: c0=(-1,-1), c1=(1,-1), c2=(-1,1), c3=(1,1); pixels at -1, 0, 1.
    tps = TPSWarp(image_size=3, grid=2)
    assert torch.equal(tps.control_points(), torch.tensor([[-1., -1.], [1., -1.], [-1., 1.], [1., 1.]],
                                                          dtype=torch.float64))
    params = tps.identity(1).double()
    params[0, 0, 0] = 0.5     # c0 pushes x
    params[0, 3, 1] = -0.25   # c3 pushes y
    params[0, 4] = torch.tensor([0.1, -0.2], dtype=torch.float64)  # translation
    grid = tps.grid(params)
    assert grid.shape == (1, 3, 3, 2) and grid.dtype == torch.float64
    # centre pixel (0, 0): r^2 = 2 to every control point
    assert grid[0, 1, 1, 0].item() == pytest.approx(0.1 + 0.5 * U(2.0), abs=1e-12)
    assert grid[0, 1, 1, 1].item() == pytest.approx(-0.2 - 0.25 * U(2.0), abs=1e-12)
    # top-left pixel (-1, -1): r^2 = 0 to c0, 8 to c3
    assert grid[0, 0, 0, 0].item() == pytest.approx(0.1 - 1.0 + 0.5 * U(0.0), abs=1e-12)
    assert grid[0, 0, 0, 1].item() == pytest.approx(-0.2 - 1.0 - 0.25 * U(8.0), abs=1e-12)
    # top-right pixel (1, -1) = row 0, column 2: r^2 = 4 to c0 and to c3
    assert grid[0, 0, 2, 0].item() == pytest.approx(0.1 + 1.0 + 0.5 * U(4.0), abs=1e-12)
    assert grid[0, 0, 2, 1].item() == pytest.approx(-0.2 - 1.0 - 0.25 * U(4.0), abs=1e-12)
    # bottom-middle pixel (0, 1) = row 2, column 1: r^2 = 5 to c0, 1 to c3
    assert grid[0, 2, 1, 0].item() == pytest.approx(0.1 + 0.0 + 0.5 * U(5.0), abs=1e-12)
    assert grid[0, 2, 1, 1].item() == pytest.approx(-0.2 + 1.0 - 0.25 * U(1.0), abs=1e-12)


def test_grid_matches_a_direct_sum_with_the_default_10x10_controls():
    tps = TPSWarp(image_size=7)
    params = tps.sample(2, torch.Generator().manual_seed(3)).double()
    grid = tps.grid(params)
    lin = torch.linspace(-1, 1, 10, dtype=torch.float64).tolist()
    ctrl = [(lin[j % 10], lin[j // 10]) for j in range(100)]
    pix = torch.linspace(-1, 1, 7, dtype=torch.float64).tolist()
    for n, row, col in [(0, 0, 0), (1, 3, 5), (1, 6, 2)]:
        x, y = pix[col], pix[row]
        basis = [U((x - cx) ** 2 + (y - cy) ** 2) for cx, cy in ctrl] + [1.0, x, y]
        for d in range(2):
            want = sum(b * params[n, j, d].item() for j, b in enumerate(basis))
            assert grid[n, row, col, d].item() == pytest.approx(want, abs=1e-12)


def test_kernel_is_precomputed_once_per_device_and_dtype():
    tps = TPSWarp(image_size=8, grid=3)
    k = tps.kernel("cpu", torch.float32)
    assert k.shape == (64, 12)
    assert tps.kernel("cpu", torch.float32) is k


def test_identity_params_give_the_identity_grid_and_warp():
    s = 16
    tps = TPSWarp(image_size=s)
    grid = tps.grid(tps.identity(2))
    lin = torch.linspace(-1, 1, s)
    assert torch.allclose(grid[..., 0], lin.view(1, 1, s).expand(2, s, s), atol=1e-6)
    assert torch.allclose(grid[..., 1], lin.view(1, s, 1).expand(2, s, s), atol=1e-6)

    const = torch.full((2, 3, s, s), 0.7)
    warped, mask = tps.warp(const, tps.identity(2))
    assert mask.shape == (2, 1, s, s)
    # bilinear + zero padding: a constant image comes back as constant * validity mask
    assert torch.allclose(warped, 0.7 * mask.expand_as(warped), atol=1e-6)
    inner = (slice(None), slice(None), slice(1, -1), slice(1, -1))
    assert torch.allclose(mask[inner], torch.ones_like(mask[inner]), atol=1e-6)
    assert torch.allclose(warped[inner], const[inner], atol=1e-6)
    # the code's grid convention (linspace(-1,1) with align_corners=False) halves the 1-px border
    assert torch.allclose(mask[0, 0, 0, 1:-1], torch.full((s - 2,), 0.5), atol=1e-6)
    assert mask[0, 0, 0, 0].item() == pytest.approx(0.25, abs=1e-6)

    # ... and samples pixel j at j*S/(S-1) - 0.5 (a ramp shows the sub-pixel stretch)
    ramp = torch.arange(s, dtype=torch.float32).view(1, 1, 1, s).expand(1, 1, s, s).contiguous()
    warped, _ = tps.warp(ramp, tps.identity(1))
    j = torch.arange(1, s - 1, dtype=torch.float32)
    assert torch.allclose(warped[0, 0, 5, 1:-1], j * s / (s - 1) - 0.5, atol=1e-5)


def test_sample_is_reproducible_and_uses_only_the_generator():
    tps = TPSWarp(image_size=8)
    state = torch.random.get_rng_state()
    a = tps.sample(4, torch.Generator().manual_seed(11))
    assert torch.equal(torch.random.get_rng_state(), state)  # global RNG untouched
    b = tps.sample(4, torch.Generator().manual_seed(11))
    c = tps.sample(4, torch.Generator().manual_seed(12))
    assert a.shape == (4, 103, 2) and a.dtype == torch.float32 and a.device.type == "cpu"
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    gen = torch.Generator().manual_seed(11)
    first, second = tps.sample(2, gen), tps.sample(2, gen)
    assert not torch.equal(first, second)  # successive draws differ


def test_sample_distribution():
    tps = TPSWarp(image_size=8)
    p = tps.sample(400, torch.Generator().manual_seed(0))
    w = p[:, :100]
    assert torch.equal(p[:, 101], torch.tensor([1.0, 0.0]).expand(400, 2))
    assert torch.equal(p[:, 102], torch.tensor([0.0, 1.0]).expand(400, 2))
    # w = 0.001 N + 0.005 B N: sd sqrt(0.001^2 + 0.5 * 0.005^2); a mixture with a heavy tail
    assert w.std().item() == pytest.approx(math.sqrt(1e-6 + 0.5 * 25e-6), rel=0.05)
    assert ((w.abs() > 0.004).float().mean().item()) == pytest.approx(0.5 * 2 * (1 - 0.7881), abs=0.02)
    assert p[:, 100].std().item() == pytest.approx(0.1, rel=0.1)
    assert abs(p[:, 100].mean().item()) < 0.02
    zero = TPSWarp(image_size=8, nonlinear_sd=0.0, bernoulli_sd=0.0, translation_sd=0.0)
    assert torch.equal(zero.sample(3, torch.Generator().manual_seed(0)), zero.identity(3))


def test_validity_mask_is_zero_where_the_grid_leaves_the_image():
    s = 16
    tps = TPSWarp(image_size=s)
    img = torch.rand(1, 3, s, s, generator=torch.Generator().manual_seed(0))
    far = tps.identity(1)
    far[0, -3] = torch.tensor([3.0, 0.0])
    warped, mask = tps.warp(img, far)
    assert torch.count_nonzero(mask) == 0 and torch.count_nonzero(warped) == 0

    half = tps.identity(1)
    half[0, -3] = torch.tensor([1.0, 0.0])  # shift by half the image to the left
    grid = tps.grid(half)[0]
    warped, mask = tps.warp(img, half)
    outside = (grid[..., 0].abs() > 1 + 1.0 / s) | (grid[..., 1].abs() > 1 + 1.0 / s)
    inside = (grid[..., 0].abs() <= 1 - 1.0 / s) & (grid[..., 1].abs() <= 1 - 1.0 / s)
    assert outside.any() and inside.any()
    assert torch.all(mask[0, 0][outside] == 0)
    assert torch.all(warped[0][:, outside] == 0)
    assert torch.allclose(mask[0, 0][inside], torch.ones(int(inside.sum())), atol=1e-6)
    assert float(mask.min()) >= 0.0 and float(mask.max()) <= 1.0 + 1e-6


def test_warp_matches_grid_sample_and_accepts_other_dtypes():
    tps = TPSWarp(image_size=12, grid=4)
    params = tps.sample(3, torch.Generator().manual_seed(5))
    img = torch.rand(3, 2, 12, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    warped, mask = tps.warp(img, params)  # float32 params, float64 images
    assert warped.dtype == torch.float64 and mask.dtype == torch.float64
    grid = tps.grid(params.double())
    ref = F.grid_sample(img, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    assert torch.allclose(warped, ref, atol=1e-12)
    with pytest.raises(ValueError):
        tps.warp(torch.rand(3, 2, 10, 10), params)
    with pytest.raises(ValueError):
        tps.grid(torch.zeros(3, 10, 2))
