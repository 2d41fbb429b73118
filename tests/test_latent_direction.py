"""The latent-direction method (Melas-Kyriazi et al. 2022): loss terms against independent
references, mask rules and filters on hand-made cases, generator adapters, resume and
divergence stops of its training stages."""
import dataclasses
import json
import math
import sys

import numpy as np
import pytest
import torch
from scipy import ndimage

from segbench.benchmark.errors import UserError
from segbench.methods.common.loop import INJECT_NAN_ENV, TrainingDiverged
from segbench.methods.common.runtime import torch_threads
from segbench.methods.context import FitContext
from segbench.methods.latent_direction import generators as gens
from segbench.methods.latent_direction.dcgan import DCGANDiscriminator, DCGANGenerator, train_dcgan
from segbench.methods.latent_direction.directions import (DirectionConfig, direction_loss, gray, optimise_direction,
                                                          radial_prior, sample_shifts, shift_loss, sobel_magnitude)
from segbench.methods.latent_direction.masks import (MaskedPairStream, RefineConfig, count_histogram_peaks,
                                                     foreground_fraction_ok, keep_large_components, mask_from_grays,
                                                     refine)
from segbench.methods.latent_direction.method import LatentDirection

pytestmark = pytest.mark.usefixtures("one_thread")


class Rows:
    """A stand-in for the run's StatsLog: keeps the rows."""

    def __init__(self):
        self.rows = []

    def write(self, **row):
        self.rows.append(row)


class ToyGenerator:
    """A tiny differentiable generator: images = tanh(z @ W) in [-1, 1], 3 x 8 x 8."""

    def __init__(self, z_dim: int = 6, side: int = 8, seed: int = 0, weights: torch.Tensor | None = None) -> None:
        self.z_dim, self.side = z_dim, side
        g = torch.Generator().manual_seed(seed)
        self.weights = weights if weights is not None else 0.3 * torch.randn(z_dim, 3 * side * side, generator=g)

    def sample_z(self, n, seed):
        g = seed if isinstance(seed, torch.Generator) else torch.Generator().manual_seed(seed)
        return torch.randn(n, self.z_dim, generator=g)

    def generate(self, z):
        return torch.tanh(z @ self.weights).view(-1, 3, self.side, self.side)

    def describe(self):
        return {"kind": "toy", "trained_on": "nothing"}


def toy_factory(checkpoint: str):
    """``generator.target`` used by the custom-adapter test: a module with a z_dim attribute."""
    module = torch.nn.Sequential(torch.nn.Linear(5, 3 * 16 * 16), torch.nn.Tanh(), torch.nn.Unflatten(1, (3, 16, 16)))
    if checkpoint:
        module.load_state_dict(torch.load(checkpoint, weights_only=True))
    module.z_dim = 5
    return module


# ----------------------------------------------------------------------------- loss terms

def test_gray_uses_bt601_weights():
    image = torch.tensor([1.0, 0.5, -1.0]).view(1, 3, 1, 1)
    assert gray(image).item() == pytest.approx(0.2989 * 1 + 0.5870 * 0.5 - 0.1140)


def test_sobel_magnitude_matches_scipy():
    rng = np.random.default_rng(0)
    images = rng.normal(size=(2, 9, 11))
    ours = sobel_magnitude(torch.tensor(images), eps=0.0).numpy()
    for image, mine in zip(images, ours):
        gx = ndimage.sobel(image, axis=1, mode="nearest")  # nearest == replicate padding
        gy = ndimage.sobel(image, axis=0, mode="nearest")
        np.testing.assert_allclose(mine, np.hypot(gx, gy) / 8, rtol=1e-10, atol=1e-12)
    # The default eps sits inside the square root.
    default = sobel_magnitude(torch.tensor(images)).numpy()
    np.testing.assert_allclose(default, np.sqrt(ours ** 2 + 1e-6), rtol=1e-10)


def test_radial_prior_centre_and_border_values():
    c = radial_prior(5, 5).double()
    grid = np.linspace(-1, 1, 5)
    rho = np.array([[math.hypot(x, y) for x in grid] for y in grid])  # hand loop, not the module's code
    mean = rho.mean()
    assert c[2, 2].item() == pytest.approx(-4 * mean, abs=1e-6)  # centre: rho = 0
    assert c[0, 0].item() == pytest.approx(4 * (math.sqrt(2) - mean), abs=1e-6)  # corner
    assert c[0, 2].item() == pytest.approx(4 * (1 - mean), abs=1e-6)  # middle of the top border
    assert abs(c.mean().item()) < 1e-6
    # On a fine grid the mean radius tends to that of the square: (sqrt2 + asinh 1) / 3.
    fine = radial_prior(401, 401)
    assert fine[200, 200].item() == pytest.approx(-4 * (math.sqrt(2) + math.asinh(1)) / 3, abs=1e-2)


def test_direction_loss_terms():
    cfg = DirectionConfig()
    images = torch.zeros(2, 3, 16, 16)
    centre_bright = -radial_prior(16, 16).expand(2, 3, 16, 16) / 8  # brighter centre, darker border
    loss, terms = direction_loss(images, images, 1.0, cfg)
    terms = {k: float(v) for k, v in terms.items()}  # tensors (no host sync in the training loop)
    assert terms["sobel"] == pytest.approx(0.0, abs=1e-12) and terms["radial"] == pytest.approx(0.0, abs=1e-7)
    loss_l, terms = direction_loss(images, centre_bright, 1.0, cfg)
    terms = {k: float(v) for k, v in terms.items()}
    loss_d, _ = direction_loss(images, centre_bright, -1.0, cfg)
    assert terms["radial"] < 0  # the light direction's radial term rewards a brighter centre
    ref = np.mean((sobel_magnitude(gray(centre_bright)).numpy() - sobel_magnitude(gray(images)).numpy()) ** 2)
    assert terms["sobel"] == pytest.approx(ref, rel=1e-5)
    assert loss_l.item() == pytest.approx(2.0 * terms["radial"] + 10.0 * ref, rel=1e-5)
    assert loss_d.item() == pytest.approx(-2.0 * terms["radial"] + 10.0 * ref, rel=1e-5)


def test_direction_stays_unit_norm_and_finds_the_relighting_code():
    # Code 0 relights the image radially (centre up), the others add random texture.
    side = 8
    weights = 0.3 * torch.randn(6, 3 * side * side, generator=torch.Generator().manual_seed(1))
    weights[0] = (-radial_prior(side, side) / 4).expand(3, side, side).reshape(-1)
    gen = ToyGenerator(side=side, weights=weights)
    cfg = DirectionConfig(steps=25, batch_size=8, lr=0.05)
    stats = Rows()
    v_l, losses, report = optimise_direction(gen, cfg, sign=1.0, seed=0, device="cpu", stage="direction_light", stats=stats)
    v_d, _, _ = optimise_direction(gen, cfg, sign=-1.0, seed=1, device="cpu")
    assert v_l.norm().item() == pytest.approx(1.0, abs=1e-5) and v_d.norm().item() == pytest.approx(1.0, abs=1e-5)
    assert len(losses) == 25 and report["steps"] == 25
    # The loop core's rows: every log_every (10) steps and at the end, window means of the terms.
    assert [r["step"] for r in stats.rows] == [10, 20, 25]
    assert all(r["phase"] == "direction_light" and {"loss", "radial", "sobel", "it_s", "peak_mem_mb"} <= set(r)
               for r in stats.rows)
    assert stats.rows[-1]["loss"] == pytest.approx(np.mean(losses[20:]))
    assert v_l[0] > 0.5 and v_d[0] < -0.5 and (v_l @ v_d) < 0
    assert np.mean(losses[-5:]) < np.mean(losses[:5])
    again = optimise_direction(gen, cfg, sign=1.0, seed=0, device="cpu").v
    assert torch.equal(again, v_l)


def test_direction_search_resumes_bit_identically_and_loads_a_finished_stage(tmp_path):
    gen, cfg = ToyGenerator(), DirectionConfig(steps=9, batch_size=4, checkpoint_every=3)
    straight = optimise_direction(gen, cfg, sign=1.0, seed=0, device="cpu")
    short = dataclasses.replace(cfg, steps=4)  # an "interrupted" search: stopped after step 4
    optimise_direction(gen, short, sign=1.0, seed=0, device="cpu", stage="direction_light", checkpoint_dir=tmp_path)
    resumed = optimise_direction(gen, cfg, sign=1.0, seed=0, device="cpu", stage="direction_light", checkpoint_dir=tmp_path)
    assert resumed.report["resumed_from_step"] == 4 and resumed.report["steps_this_call"] == 5
    assert torch.equal(resumed.v, straight.v) and resumed.losses == straight.losses
    loaded = optimise_direction(gen, cfg, sign=1.0, seed=0, device="cpu", stage="direction_light", checkpoint_dir=tmp_path)
    assert loaded.report["steps_this_call"] == 0 and torch.equal(loaded.v, straight.v)
    assert loaded.losses == straight.losses
    with pytest.raises(UserError, match=r"different direction_light run \(changed: sign\)"):
        optimise_direction(gen, cfg, sign=-1.0, seed=0, device="cpu", stage="direction_light", checkpoint_dir=tmp_path)


def test_a_nan_in_the_direction_search_stops_with_the_last_finite_snapshot(tmp_path, monkeypatch):
    monkeypatch.setenv(INJECT_NAN_ENV, "direction_dark@5")
    cfg = DirectionConfig(steps=8, batch_size=4, checkpoint_every=2)
    with pytest.raises(TrainingDiverged, match=r"direction_dark training diverged at step 5: .*\(step 4\)"):
        optimise_direction(ToyGenerator(), cfg, sign=-1.0, seed=0, device="cpu", stage="direction_dark",
                           checkpoint_dir=tmp_path)
    saved = torch.load(tmp_path / "direction_dark.pt", weights_only=True)
    assert saved["step"] == 4 and len(saved["extra"]["losses"]) == 4
    v = saved["modules"]["direction"]["v"]
    assert torch.isfinite(v).all() and v.norm().item() == pytest.approx(1.0, abs=1e-5)


def test_forward_normalisation_leaves_no_radial_gradient():
    """With d = v / |v| in the forward pass (official latent_shift_model.py:22) the loss depends on v
    only through its direction, so dL/dv = (I - u u^T) dL/du / |v| with u = v / |v|: no component
    along v. Shifting by v itself (the earlier reading) leaves one."""
    gen = ToyGenerator()
    g = torch.Generator().manual_seed(3)
    z, v0 = gen.sample_z(4, g), 0.3 * torch.randn(gen.z_dim, generator=g)
    r = sample_shifts(4, gen.z_dim, DirectionConfig(), g)
    cfg = DirectionConfig()
    v = v0.clone().requires_grad_()
    shift_loss(gen, z, r, v, 1.0, cfg)[0].backward()
    u = (v0 / v0.norm()).requires_grad_()  # the same loss as a function of the unit direction itself
    shift_loss(gen, z, r, u, 1.0, DirectionConfig(normalise_in_forward=False))[0].backward()
    grad_u, u = u.grad, u.detach()
    expected = (grad_u - (grad_u @ u) * u) / v0.norm()
    torch.testing.assert_close(v.grad, expected, rtol=1e-5, atol=1e-8)
    assert abs(v.grad @ u).item() < 1e-6 * v.grad.norm().item()
    raw = v0.clone().requires_grad_()
    shift_loss(gen, z, r, raw, 1.0, DirectionConfig(normalise_in_forward=False))[0].backward()
    assert abs(raw.grad @ u).item() > 1e-3 * raw.grad.norm().item()


def test_shift_magnitudes_per_latent_element_or_per_code():
    cfg = DirectionConfig()
    r = sample_shifts(5, 7, cfg, torch.Generator().manual_seed(0))
    assert r.shape == (5, 7) and r.min() >= 0.1 and len(set(r[0].tolist())) == 7  # randn_like(z), clipped
    per_code = sample_shifts(5, 7, DirectionConfig(shift_per="code"), torch.Generator().manual_seed(0))
    assert per_code.shape == (5, 1) and per_code.min() >= 0.1
    assert (torch.zeros(5, 7) + per_code).shape == (5, 7)


# ----------------------------------------------------------------------------- masks and filters

def test_mask_rules_on_a_hand_made_pair():
    light = torch.tensor([[[0.9, -0.2], [0.1, 0.0]]])
    original = torch.tensor([[[0.5, -0.1], [0.3, 0.0]]])
    dark = torch.tensor([[[0.1, -0.3], [0.2, 0.0]]])
    assert mask_from_grays(light, original, dark, "both").tolist() == [[[True, True], [False, False]]]
    assert mask_from_grays(light, original, dark, "single").tolist() == [[[True, False], [False, False]]]
    assert mask_from_grays(light, original, dark, "single_dark").tolist() == [[[True, True], [True, False]]]
    with pytest.raises(ValueError):
        mask_from_grays(light, original, dark, "neither")


def test_connected_components_filter():
    mask = np.zeros((8, 10), bool)
    mask[0:2, 0:5] = True  # 10 px
    mask[2, 5] = mask[3, 6] = True  # a diagonal chain: joins it under 8-connectivity (12 px, the largest)
    mask[5, 0:3] = True  # 3 px > 0.2 * 12: kept
    mask[7, 8:10] = True  # 2 px, not > 2.4: removed
    mask[6, 5] = True  # 1 px: removed
    out = keep_large_components(mask, 0.2)
    expected = np.zeros_like(mask)
    expected[0:2, 0:5] = True
    expected[2, 5] = expected[3, 6] = True
    expected[5, 0:3] = True
    np.testing.assert_array_equal(out, expected)
    assert not keep_large_components(np.zeros((4, 4), bool), 0.2).any()


def test_foreground_fraction_filter():
    mask = np.zeros((4, 4), bool)
    assert foreground_fraction_ok(mask, 0.5)  # empty passes: 0 <= fraction (official gan_dataset.py:106)
    assert not foreground_fraction_ok(mask, 0.5, allow_empty=False)  # the earlier (0, 0.5] rule
    mask[:2] = True
    assert foreground_fraction_ok(mask, 0.5) and foreground_fraction_ok(mask, 0.5, allow_empty=False)  # 0.5 kept
    mask[2, 0] = True
    assert not foreground_fraction_ok(mask, 0.5)


def _bin_centre(k):  # 12 bins on [-1, 1]: edges at -1 + k/6
    return -1 + (k + 0.5) / 6


RAMP = np.concatenate([np.full(k + 1, _bin_centre(k)) for k in range(12)])  # counts 1, 2, ..., 12


def test_histogram_peak_filter_strict():
    assert count_histogram_peaks(np.full(50, _bin_centre(5)), 12, 3, rule="strict") == 1
    far = np.r_[np.full(30, _bin_centre(0)), np.full(30, _bin_centre(11))]
    assert count_histogram_peaks(far, 12, 3, rule="strict") == 2
    # Bins 0 and 2 with 3 values each: box sums [3, 6, 3, 3, 0, ...] have one maximum (bin 1);
    # without smoothing they are two.
    near = np.r_[np.full(3, _bin_centre(0)), np.full(3, _bin_centre(2))]
    assert count_histogram_peaks(near, 12, 3, rule="strict") == 1
    assert count_histogram_peaks(near, 12, 1, rule="strict") == 2
    # A plateau counts once.
    plateau = np.r_[np.full(4, _bin_centre(4)), np.full(4, _bin_centre(5))]
    assert count_histogram_peaks(plateau, 12, 1, rule="strict") == 1


def test_histogram_peak_filter_reference_rule():
    # One spike in bin 5: box sums [0,0,0,0,50,50,50,0,0,0,0,0]; every bin >= its neighbours
    # counts, i.e. bins 0,1,2 (flat zeros), 4,5,6 (the plateau) and 8..11.
    assert count_histogram_peaks(np.full(50, _bin_centre(5)), 12, 3) == 10
    # Counts rising 1..12: box sums [3, 6, 9, ..., 33, 23], a single maximum at bin 10.
    assert count_histogram_peaks(RAMP, 12, 3) == 1
    assert count_histogram_peaks(RAMP, 12, 3, rule="strict") == 1
    # Equal counts: sums [4, 6, ..., 6, 4]: bins 1..10 under the reference rule, one strictly.
    flat = np.concatenate([np.full(2, _bin_centre(k)) for k in range(12)])
    assert count_histogram_peaks(flat, 12, 3) == 10
    assert count_histogram_peaks(flat, 12, 3, rule="strict") == 1
    with pytest.raises(ValueError):
        count_histogram_peaks(flat, 12, 3, rule="other")


def test_refine_reports_each_filter():
    cfg = RefineConfig()
    two_modes = np.r_[np.full(96, -0.9), np.full(96, 0.9)].reshape(3, 8, 8)  # an RGB shifted image
    small = np.zeros((8, 8), bool)
    small[2:5, 2:5] = True
    small[7, 7] = True
    cleaned, verdict = refine(small, [two_modes], cfg)
    assert verdict == {"components_changed": True, "fraction_fail": False, "histogram_fail": False}
    assert cleaned.sum() == 9
    _, verdict = refine(np.ones((8, 8), bool), [RAMP], cfg)
    assert verdict == {"components_changed": False, "fraction_fail": True, "histogram_fail": True}
    # With two shifted images (mask rule "both") each must pass.
    assert refine(small, [two_modes, RAMP], cfg)[1]["histogram_fail"]


def _grays(*rows):
    return [torch.tensor([[row]], dtype=torch.float64) for row in rows]  # each [1, 1, W]


def test_area_filter_checks_each_direction_mask_for_rule_both():
    """1 x 4 gray images. Light mask = light - original > 0, dark mask = original - dark > 0, the
    combined (trained-on) mask = light - dark > 0; the area rule is fraction in [0, 0.5].

    Case A: original 0, light [1, 1, 1, -1], dark [2, -1, 0, 0]: combined [0, 1, 1, 0] (1/2, passes),
    light [1, 1, 1, 0] (3/4, fails), dark [0, 1, 0, 0] (1/4) -> rejected by the official rule only.
    Case B: light [1, 1, 0, 0], dark [0, 0, -1, -1]: light 1/2 and dark 1/2 pass, combined
    [1, 1, 1, 1] (1) fails -> rejected by the combined rule only."""
    cfg, combined_cfg = RefineConfig(hist_min_peaks=0), RefineConfig(hist_min_peaks=0, area_masks="combined")
    for light, dark, official_fails in (([1, 1, 1, -1], [2, -1, 0, 0], True), ([1, 1, 0, 0], [0, 0, -1, -1], False)):
        light_g, original_g, dark_g = _grays(light, [0, 0, 0, 0], dark)
        combined = mask_from_grays(light_g, original_g, dark_g, "both")[0].numpy()
        per_direction = [mask_from_grays(light_g, original_g, dark_g, rule)[0].numpy()
                         for rule in ("single", "single_dark")]
        shifted = [np.zeros((3, 1, 4))] * 2
        _, official = refine(combined, shifted, cfg, per_direction)
        _, earlier = refine(combined, shifted, combined_cfg, per_direction)
        assert official["fraction_fail"] is official_fails and earlier["fraction_fail"] is not official_fails
    # Without per-direction masks (single rules) the rule's own mask is checked.
    assert refine(np.ones((1, 4), bool), [np.zeros((3, 1, 4))], cfg)[1]["fraction_fail"]


class LookupGenerator:
    """z = [code id, s]: s = 0 the original, +5 the light shift, -5 the dark shift (v_l = [0, 1],
    v_d = [0, -1], eps 5). Codes are handed out 0, 1, 2, ... Images are 2 x 2 grays in all three
    channels: the original is 0; the light / dark image raises / lowers pixel (0, 0) by 0.5 for a
    "good" code, all four pixels for a "bad" one (area 1 > 0.5: rejected)."""

    z_dim = 2

    def __init__(self, bad):
        self.bad, self.next = set(bad), 0

    def sample_z(self, n, rng):
        codes = torch.arange(self.next, self.next + n, dtype=torch.float32)
        self.next += n
        return torch.stack([codes, torch.zeros(n)], 1)

    def generate(self, z):
        out = torch.zeros(len(z), 3, 2, 2)
        for i, (code, s) in enumerate(z.tolist()):
            if s != 0:
                region = (slice(None), slice(None)) if int(code) in self.bad else (0, 0)
                out[i, :, region[0], region[1]] = 0.5 * np.sign(s)
        return out


V_LIGHT, V_DARK = torch.tensor([0.0, 1.0]), torch.tensor([0.0, -1.0])


def _lookup_stream(bad, **kwargs):
    return MaskedPairStream(LookupGenerator(bad), V_LIGHT, V_DARK, rule="both", shift=5.0,
                            refine_cfg=RefineConfig(hist_min_peaks=0), **kwargs)


def test_draw_gives_the_light_and_dark_masks_for_rule_both():
    drawn = _lookup_stream(bad=[1]).draw(2, torch.Generator())
    light, dark = drawn["direction_masks"]
    assert light[0].tolist() == [[True, False], [False, False]] and dark[1].all()
    assert torch.equal(light, dark) and drawn["mask"][0].tolist() == [[True, False], [False, False]]


def test_official_fill_keeps_drawing_and_drops_or_keeps_the_surplus():
    """Batch 3 from rounds of 3 codes where codes 0 and 1 fail: round 1 passes code 2, round 2
    codes 3, 4, 5 -> 4 passed, one more than needed."""
    stream = _lookup_stream(bad=[0, 1])
    images, labels = stream.pairs(3, torch.Generator())
    assert images.shape == (3, 3, 2, 2) and labels.shape == (3, 2, 2)
    c = stream.counts
    assert (c.drawn, c.passed, c.rejected, c.used, c.surplus_dropped, c.filled_unfiltered) == (6, 4, 2, 3, 1, 0)
    keep = _lookup_stream(bad=[0, 1], keep_surplus=True)
    images, _ = keep.pairs(3, torch.Generator())
    assert len(images) == 4 and keep.counts.surplus_dropped == 0  # the released code's batch (>= batch_size)
    assert labels[:, 0, 0].all() and labels.sum() == 3  # the good codes' one-pixel masks


def test_official_fill_raises_after_consecutive_empty_rounds():
    everything_bad = range(1000)
    stream = _lookup_stream(bad=everything_bad)
    with pytest.raises(UserError, match="25 consecutive rounds"):
        stream.pairs(4, torch.Generator())
    assert (stream.counts.drawn, stream.counts.passed) == (100, 0)
    # A round with a passing sample resets the count: codes 0-3 bad, 4 good, 5-11 bad, ...
    stream = _lookup_stream(bad=set(range(16)) - {4}, max_empty_rounds=3)
    with pytest.raises(UserError, match="3 consecutive rounds"):
        stream.pairs(2, torch.Generator())
    assert stream.counts.drawn == 2 * (2 + 1 + 3) and stream.counts.passed == 1


def test_unfiltered_fill_completes_the_batch_with_rejected_samples():
    gen = ToyGenerator()
    v = torch.zeros(gen.z_dim)  # no shift at all: every mask is empty, rejected when empty masks are
    refine_cfg = RefineConfig(allow_empty=False)
    stream = MaskedPairStream(gen, v, v, rule="both", shift=5.0, refine_cfg=refine_cfg, fill="unfiltered",
                              max_rounds=3)
    images, labels = stream.pairs(4, torch.Generator().manual_seed(0))
    assert images.shape == (4, 3, 8, 8) and labels.shape == (4, 8, 8) and labels.dtype == torch.int64
    assert images.min() >= 0 and images.max() <= 1
    c = stream.counts
    assert (c.drawn, c.passed, c.fraction_fail, c.rejected, c.filled_unfiltered) == (12, 0, 12, 12, 4)
    # Empty masks pass the official area rule.
    official = MaskedPairStream(gen, v, v, rule="both", shift=5.0, refine_cfg=RefineConfig(hist_min_peaks=0))
    official.pairs(4, torch.Generator().manual_seed(0))
    assert (official.counts.drawn, official.counts.passed, official.counts.fraction_fail) == (4, 4, 0)
    # Without refinement every draw is used.
    plain = MaskedPairStream(gen, v, v, rule="both", shift=5.0, refine_cfg=RefineConfig(enabled=False),
                             fill="unfiltered", max_rounds=3)
    plain.pairs(4, torch.Generator().manual_seed(0))
    assert (plain.counts.drawn, plain.counts.passed, plain.counts.filled_unfiltered) == (4, 4, 0)


# ----------------------------------------------------------------------------- generators

def _check_adapter(adapter, side):
    z = adapter.sample_z(3, 7)
    assert z.shape == (3, adapter.z_dim) and torch.equal(z, adapter.sample_z(3, 7))
    with torch.no_grad():
        images = adapter.generate(z)
    assert images.shape == (3, 3, side, side) and images.min() >= -1 and images.max() <= 1
    assert isinstance(adapter.describe(), dict) and adapter.describe()["kind"]


def test_dcgan_shapes_and_module_adapter():
    g = DCGANGenerator(z_dim=10, width=4, image_size=32)
    assert DCGANDiscriminator(width=4, image_size=32)(g(torch.randn(2, 10))).shape == (2,)
    _check_adapter(gens.ModuleGenerator(g, 10, {"kind": "train"}), 32)
    with pytest.raises(UserError):
        DCGANGenerator(image_size=48)


def test_custom_generator_adapter(tmp_path):
    module = toy_factory("")
    torch.save(module.state_dict(), tmp_path / "g.pt")
    adapter = gens.build_pretrained_generator(gens.GeneratorConfig(
        kind="custom", target="tests.test_latent_direction:toy_factory", checkpoint=str(tmp_path / "g.pt")))
    _check_adapter(adapter, 16)
    assert adapter.describe()["target"] == "tests.test_latent_direction:toy_factory"
    for target in ("no_colon", "tests.test_latent_direction:missing", "no_such_module_xyz:f"):
        with pytest.raises(UserError):
            gens.build_pretrained_generator(gens.GeneratorConfig(kind="custom", target=target))


def test_face_dcgan_adapter():
    try:
        gens.face_weights_path()
    except UserError as exc:
        pytest.skip(f"the 'faces' extra is not installed: {exc}")
    adapter = gens.load_face_dcgan()
    _check_adapter(adapter, 64)
    assert adapter.z_dim == 100 and "gan-face-generate" in adapter.describe()["package"]
    assert "wandb" not in sys.modules  # the package's heavy modules are never imported


def test_missing_face_extra_and_ganseg_run_are_user_errors(monkeypatch, tmp_path):
    import importlib.util
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(UserError, match="faces"):
        gens.face_weights_path()
    monkeypatch.undo()
    with pytest.raises(UserError, match="checkpoints/final"):
        gens.build_pretrained_generator(gens.GeneratorConfig(kind="ganseg_run", run=str(tmp_path)))
    with pytest.raises(UserError):
        gens.build_pretrained_generator(gens.GeneratorConfig(kind="ganseg_run"))


def test_ganseg_run_adapter_generates_and_is_differentiable(tmp_path, fit_images):
    from segbench.methods.ganseg.method import GANSeg

    ganseg = GANSeg(GANSeg.config_for("smoke", {"num_parts": 2}))
    ganseg.progress = False
    ganseg.fit(fit_images, FitContext(seed=0, run_dir=tmp_path / "fit", progress=False))
    ganseg.save(tmp_path / "checkpoints" / "final")  # where the runner puts a run's final checkpoint
    adapter = gens.build_pretrained_generator(gens.GeneratorConfig(run=str(tmp_path)))  # kind=auto
    _check_adapter(adapter, 32)
    assert adapter.z_dim == ganseg.latent_dim and adapter.describe()["kind"] == "ganseg_run"
    z = adapter.sample_z(2, 0).requires_grad_(True)
    adapter.generate(z).mean().backward()
    assert z.grad is not None and z.grad.abs().sum() > 0


def test_auto_kind_follows_the_fields_that_are_set():
    assert gens.resolved_kind(gens.GeneratorConfig()) == "train"
    assert gens.resolved_kind(gens.GeneratorConfig(run="runs/x")) == "ganseg_run"  # --set generator.run=... alone
    assert gens.resolved_kind(gens.GeneratorConfig(target="m:f")) == "custom"
    assert gens.resolved_kind(gens.GeneratorConfig(kind="face_dcgan", run="ignored")) == "face_dcgan"
    with pytest.raises(UserError, match="not both"):
        gens.resolved_kind(gens.GeneratorConfig(run="r", target="m:f"))


# ----------------------------------------------------------------------------- method

def test_config_presets_and_nested_overrides():
    cfg = LatentDirection.config_for("paper", {"generator.kind": "face_dcgan", "mask_rule": "single",
                                               "segmenter.steps": "10"})
    assert cfg.generator.kind == "face_dcgan" and cfg.mask_rule == "single" and cfg.segmenter.steps == 10
    paper = LatentDirection.config_for("paper")
    assert (paper.direction.steps, paper.direction.lr, paper.direction.batch_size) == (300, 5e-3, 32)
    assert (paper.direction.shift_per, paper.direction.normalise_in_forward) == ("element", True)
    assert (paper.refine.allow_empty, paper.refine.area_masks, paper.batch_fill, paper.max_empty_rounds) == \
        (True, "each", "official", 25)
    # The released code's schedule: 18k steps of batch 95 at a constant lr (its StepLR never fires) ...
    seg = paper.segmenter
    assert (seg.arch, seg.loss, seg.steps, seg.batch_size, seg.lr, seg.lr_decay_at) == ("unet", "ce", 18_000, 95,
                                                                                         1e-3, 0)
    from segbench.methods.common.segmenter import lr_scheduler

    def opt(config):
        return torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=config.lr)

    assert lr_scheduler(seg, opt(seg)) is None
    # ... and the paper's A.1.2 text as a preset: 12k steps, x0.2 from step 8k.
    a12 = LatentDirection.config_for("paper_a12").segmenter
    assert (a12.steps, a12.lr_decay_at) == (12_000, 8_000)
    sched = lr_scheduler(a12, opt(a12))
    assert dict(sched.milestones) == {8_000: 1} and sched.gamma == pytest.approx(0.2)
    with pytest.raises(UserError):
        LatentDirection.config_for("paper", {"generator.kind": "biggan"})


@pytest.fixture(scope="module")
def fit_images():
    from segbench.datasets import DATASETS
    return DATASETS.get("synthetic_parts")(image_size=32, n_train=12, n_regression_fit=1, n_test=1) \
        .split("train").fit_images()


@pytest.fixture(scope="module")
def fits(fit_images, tmp_path_factory):
    """Smoke fits shared by the tests below: run ``a`` straight (segmenter 4 steps) and run ``b``
    stopped after segmenter step 2, then fitted again to 4 steps in the same folder."""
    root = tmp_path_factory.mktemp("fits")

    def fitted(run_dir, seg_steps):
        cfg = LatentDirection.config_for("smoke", {"segmenter.steps": seg_steps, "segmenter.checkpoint_every": 1})
        method = LatentDirection(cfg)
        method.fit(fit_images, FitContext(seed=0, run_dir=run_dir, progress=False, num_threads=1))
        return method

    with torch_threads(1):
        straight = fitted(root / "a", 4)
        fitted(root / "b", 2)  # an "interrupted" run: the segmenter stopped at step 2
        resumed = fitted(root / "b", 4)
    return straight, resumed, root


def _rows(run_dir):
    return [json.loads(line) for line in (run_dir / "stats.jsonl").read_text().splitlines()]


def test_fit_resumes_bit_identically_and_loads_finished_stages(fits, fit_images):
    straight, resumed, root = fits
    images = torch.stack([fit_images[i] for i in range(3)])
    assert torch.equal(straight.predict(images).part_probs, resumed.predict(images).part_probs)
    assert torch.equal(straight.v_light, resumed.v_light) and torch.equal(straight.v_dark, resumed.v_dark)
    # The second fit of run b loaded the finished GAN and direction stages instead of recomputing them.
    rows_a, rows_b = _rows(root / "a"), _rows(root / "b")
    for phase in ("dcgan", "direction_light", "direction_dark"):
        assert sum(r["phase"] == phase for r in rows_b) == sum(r["phase"] == phase for r in rows_a)
    summaries = [r for r in _rows(root / "b") if r["phase"] == "direction_summary"]
    assert [r["directions_from_snapshot"] for r in summaries] == [False, True]
    info = json.loads((root / "b" / "fit_info.json").read_text())
    assert info["directions"]["directions_from_snapshot"] and info["segmenter"]["steps"] == 4


def test_fit_records_stats_figures_fit_info_and_stage_snapshots(fits):
    _, _, root = fits
    run = root / "a"
    rows = _rows(run)
    phases = {r["phase"] for r in rows}
    assert {"dcgan", "generator", "direction_light", "direction_dark", "direction_summary", "pairs", "pairs_total",
            "segmenter"} <= phases
    gan_rows = [r for r in rows if r["phase"] == "dcgan"]
    assert [r["step"] for r in gan_rows] == [1, 2, 3] and all({"g_loss", "d_loss", "it_s"} <= set(r) for r in gan_rows)
    summary = next(r for r in rows if r["phase"] == "direction_summary")
    assert -1 <= summary["v_light_dot_v_dark"] <= 1
    assert (run / "figures" / "latent_shift_strip.png").is_file()
    assert (run / "figures" / "generated_pairs.png").is_file()
    info = json.loads((run / "fit_info.json").read_text())
    assert "fit split" in info["generator"]["trained_on"] and info["device"] == "cpu"
    assert not (run / "generator.json").exists()
    ctx = FitContext(run_dir=run)
    for stage in ("dcgan", "direction_light", "direction_dark"):
        saved = torch.load(ctx.checkpoint_dir(stage) / f"{stage}.pt", weights_only=True)
        assert saved["stage"] == stage and saved["step"] == 3  # smoke: 3 GAN steps, 3 direction steps


def test_a_nan_in_dcgan_training_stops_with_the_last_finite_snapshot(fit_images, tmp_path, monkeypatch):
    cfg = LatentDirection.config_for("smoke", {"generator.train_steps": 4, "generator.checkpoint_every": 2}).generator
    ctx = FitContext(seed=0, run_dir=tmp_path, progress=False)
    monkeypatch.setenv(INJECT_NAN_ENV, "dcgan@3")
    with pytest.raises(TrainingDiverged, match=r"dcgan training diverged at step 3: non-finite d_loss, g_loss; "
                                               r"kept .*dcgan\.pt \(step 2\)"):
        train_dcgan(cfg, fit_images, ctx)
    saved = torch.load(ctx.checkpoint_dir("dcgan") / "dcgan.pt", weights_only=True)
    assert saved["step"] == 2
    assert all(torch.isfinite(t).all() for module in saved["modules"].values() for t in module.values()
               if t.is_floating_point())
    # Continuing from that snapshot gives the generator of a run that never stopped.
    monkeypatch.delenv(INJECT_NAN_ENV)
    resumed, info = train_dcgan(cfg, fit_images, ctx)
    straight, _ = train_dcgan(cfg, fit_images, FitContext(seed=0, progress=False))
    assert info["training"]["resumed_from_step"] == 2 and info["steps"] == 4
    assert all(torch.equal(a, b) for a, b in zip(resumed.state_dict().values(), straight.state_dict().values()))


def test_explore_script_writes_directions_figures_and_summary(tmp_path):
    from segbench.methods.latent_direction.explore import main
    args = ["--preset", "smoke", "--set", "generator.kind=custom", "--set",
            "generator.target=tests.test_latent_direction:toy_factory", "--out", str(tmp_path), "--device", "cpu",
            "--no-progress"]
    assert main(args) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["directions_from_cache"] is False and -1 <= summary["v_light_dot_v_dark"] <= 1
    assert summary["filter_probe"]["drawn"] == 256
    assert (tmp_path / "figures" / "latent_shift_strip.png").is_file()
    exported = torch.load(tmp_path / "directions.pt", weights_only=True)
    assert exported["v_light"].norm().item() == pytest.approx(1.0, abs=1e-5) and len(exported["losses_dark"]) == 3
    assert json.loads((tmp_path / "fit_info.json").read_text())["generator"]["kind"] == "custom"
    assert main(args) == 0  # the second call loads the finished direction stages
    assert json.loads((tmp_path / "summary.json").read_text())["directions_from_cache"] is True
    assert torch.equal(torch.load(tmp_path / "directions.pt", weights_only=True)["v_light"], exported["v_light"])
    assert main(["--preset", "smoke", "--out", str(tmp_path / "x")]) == 2  # kind=train needs benchmark run


def test_predict_keeps_the_aspect_of_non_square_views():
    """The released code runs its fully convolutional UNet on the 128 x W saliency view as given;
    test_keep_aspect scales the shorter side to segmenter.image_size instead of squashing."""
    seen = []

    class Recorder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(()))

        def forward(self, x):
            seen.append(tuple(x.shape))
            return torch.stack([x[:, 0], -x[:, 0]], 1) + self.w

    method = LatentDirection(LatentDirection.config_for("smoke"))  # segmenter.image_size = 32
    method.model = Recorder()
    out = method.predict(torch.rand(2, 3, 64, 96)).part_probs
    assert seen[-1] == (2, 3, 32, 48) and out.shape == (2, 2, 64, 96)
    # A view whose shorter side already is image_size goes in as it is: softmax of the model's logits.
    x = torch.rand(1, 3, 32, 48)
    probs = method.predict(x).part_probs
    assert seen[-1] == (1, 3, 32, 48)
    torch.testing.assert_close(probs, torch.stack([x[:, 0] * 2 - 1, 1 - x[:, 0] * 2], 1).softmax(1))
    method.predict(torch.rand(1, 3, 64, 64))
    assert seen[-1] == (1, 3, 32, 32)
    squash = LatentDirection(LatentDirection.config_for("smoke", {"test_keep_aspect": "false"}))
    squash.model = method.model
    squash.predict(torch.rand(1, 3, 64, 96))
    assert seen[-1] == (1, 3, 32, 32)
