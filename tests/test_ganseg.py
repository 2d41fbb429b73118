"""GANSeg: equations on hand-computed cases, shapes, translation equivariance, distinct layer
parameters, exact resume, divergence stops, and the latent interface."""
from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest
import torch

from segbench.benchmark.errors import UserError
from segbench.methods.common.loop import INJECT_NAN_ENV, TrainingDiverged
from segbench.methods.context import FitContext
from segbench.methods.ganseg.config import DATASET_PRESETS, GANSegConfig, validate
from segbench.methods.ganseg.layers import AdaINConvBlock, RelativePositionalEncoding, SPADEResBlock, grid_coordinates, heatmaps, linear_tau, part_statistics
from segbench.methods.ganseg.losses import area_loss, area_target_code, concentration_loss, gradient_penalty
from segbench.methods.ganseg.method import GANSeg
from segbench.methods.ganseg.train import build_networks, train_gan


pytestmark = pytest.mark.usefixtures("one_thread")


def smoke(**overrides) -> GANSegConfig:
    return GANSeg.config_for("smoke", {"num_parts": 3, **overrides})


class Images(torch.utils.data.Dataset):
    def __init__(self, n: int = 8, size: int = 32) -> None:
        self.x = torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(5))

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.x[i]


# ----------------------------------------------------------------------------- equations

def test_eq1_part_centre_and_sigma_hand_computed():
    # part 0: square corners -> centre (1, 1), sum of squared offsets 4 * 2 = 8, sigma = sqrt(8) / 3
    # part 1: four identical points -> sigma 0
    pts = torch.tensor([[[0., 0.], [2., 0.], [0., 2.], [2., 2.], [.5, -.5], [.5, -.5], [.5, -.5], [.5, -.5]]])
    centres, sigma = part_statistics(pts, n_per=4)
    assert torch.allclose(centres, torch.tensor([[[1., 1.], [.5, -.5]]]))
    assert torch.allclose(sigma, torch.tensor([[math.sqrt(8) / 3, 0.]]), atol=1e-5)
    # code's linear width: mean |offset| over points and axes = 1 for the square
    assert torch.allclose(linear_tau(pts, 4), torch.tensor([[1., 0.]]))


def test_eq4_heatmap_hand_computed_and_margin_grids():
    assert torch.allclose(grid_coordinates(4, 0, "pixel_centres"), torch.tensor([-.75, -.25, .25, .75]))
    # a 1-pixel margin continues the pitch: eq. 12's grid [-1 - 2m/r, 1 + 2m/r]
    assert torch.allclose(grid_coordinates(4, 1, "pixel_centres"), torch.tensor([-1.25, -.75, -.25, .25, .75, 1.25]))
    # the code's grid: corner-aligned linspace(-1, 1, r), margin of the same pitch 2/(r-1)
    assert torch.allclose(grid_coordinates(5, 0, "corners"), torch.tensor([-1., -.5, 0., .5, 1.]))
    assert torch.allclose(grid_coordinates(5, 2, "corners"), torch.linspace(-2, 2, 9))
    centre, sigma = torch.tensor([[[-.25, .25]]]), torch.tensor([[.5]])
    h = heatmaps(centre, sigma, 4, 0, "gaussian", "pixel_centres")[0, 0]  # [row (y), column (x)]
    assert h[2, 1].item() == pytest.approx(1.0)  # at the centre
    assert h[2, 2].item() == pytest.approx(math.exp(-1))  # d = 0.5 = sigma: exp(-d^2 / sigma^2)
    assert h[0, 3].item() == pytest.approx(math.exp(-8))  # d^2 = 1 + 1
    lin = heatmaps(centre, torch.tensor([[1.]]), 4, 0, "linear", "pixel_centres")[0, 0]
    assert lin[2, 2].item() == pytest.approx(0.5, abs=1e-5) and lin[0, 3].item() == 0.0  # 1 - d / tau, clamped
    # on the code's grid (5 px: -1, -.5, 0, .5, 1) around (0, 0) with tau 1: 1 - d / (1 + 1e-6)
    lin = heatmaps(torch.zeros(1, 1, 2), torch.ones(1, 1), 5, 0)[0, 0]
    assert lin[2, 2].item() == 1.0 and lin[2, 3].item() == pytest.approx(0.5, abs=1e-5)
    assert lin[0, 0].item() == 0.0  # d = sqrt 2 > tau


def test_eq16_concentration_hand_computed():
    # 2x2 image, pixel centres at +-0.5. Part 1: all mass on the top-left pixel (-.5,-.5), centre
    # (.5,-.5): d^2 = 1. Part 2: uniform, centre (0,0): every d^2 = 0.5.
    masks = torch.zeros(1, 2, 2, 2)
    masks[0, 0, 0, 0] = 0.3  # normalisation makes the scale irrelevant
    masks[0, 1] = 0.25
    centres = torch.tensor([[[.5, -.5], [0., 0.]]])
    assert concentration_loss(masks, centres, "sum", "pixel_centres").item() == pytest.approx(1.5, abs=1e-5)
    assert concentration_loss(masks, centres, "mean", "pixel_centres").item() == pytest.approx(0.75, abs=1e-5)
    # the code's grid puts the 2x2 pixels at +-1: part 1 d^2 = 4 + 0, part 2 d^2 = 2 everywhere
    assert concentration_loss(masks, centres * 2, "mean").item() == pytest.approx((4 + 2) / 2, abs=1e-5)


def test_eq17_area_hand_computed():
    heat = torch.zeros(1, 2, 2, 2)
    masks = torch.zeros(1, 2, 2, 2)
    heat[0, 0] = 0.75  # sum 3
    heat[0, 1, 0, 0] = 1.0  # sum 1
    masks[0, 0, :, 0] = 1.0  # sum 2 -> gap 1
    masks[0, 1] = 1.0  # sum 4 -> gap -3, clamped to 0
    assert area_loss(masks, heat.sum(dim=(-2, -1))).item() == pytest.approx(1.0)  # eq. 17's target


def test_code_area_target_is_pi_tau_pixels_squared():
    # a square of half-side 0.5: mean |offset| = 0.5; at 8 px, tau = 0.5 * 4 = 2 px -> 4 pi
    pts = torch.tensor([[[-.5, -.5], [.5, -.5], [-.5, .5], [.5, .5]]])
    assert area_target_code(pts, 4, 8).item() == pytest.approx(4 * math.pi)
    masks = torch.zeros(1, 1, 8, 8)
    masks[0, 0, :2, :5] = 1.0  # area 10 -> gap 4 pi - 10
    assert area_loss(masks, area_target_code(pts, 4, 8)).item() == pytest.approx(4 * math.pi - 10, abs=1e-5)


def test_gradient_penalty_variants_on_a_linear_critic():
    # D(x) = sum(w * x): grad = w, ||w||^2 = 4 + 9 + 36 = 49
    w = torch.tensor([2., 3., 6.]).view(1, 3, 1, 1)
    x = torch.ones(2, 3, 1, 1, requires_grad=True)
    logits = (w * x).flatten(1).sum(1)
    assert gradient_penalty(logits, x, "r1").item() == pytest.approx(49.0)
    logits = (w * x).flatten(1).sum(1)
    assert gradient_penalty(logits, x, "centred").item() == pytest.approx(36.0)  # (7 - 1)^2


def test_eq5_encoding_matches_literal_difference_form():
    torch.manual_seed(0)
    pe = RelativePositionalEncoding(num_points=5, out_channels=12)
    pts = torch.rand(2, 5, 2) * 2 - 1
    fast, literal = pe(pts, 8, 3), pe.reference(pts, 8, 3)
    assert fast.shape == (2, 12, 14, 14)
    assert torch.allclose(fast, literal, atol=1e-5)


def test_paper_preset_per_dataset_is_the_released_parameters():
    """log/gan_<dataset>/parameters.json and train_gan.py's 30 epochs x min(n/64, 1002) steps."""
    def paper(dataset):
        return GANSeg.config_for("paper", dataset=dataset)
    celeba, taichi, cub, flowers = (paper(d) for d in ("celeba_wild", "taichi", "cub", "flowers"))
    assert (celeba.num_parts, celeba.lambda_con, celeba.steps) == (8, 10.0, 21_360)
    assert (taichi.num_parts, taichi.lambda_con, taichi.steps) == (10, 30.0, 30_060)
    assert (cub.lambda_con, cub.steps, cub.generator.channels) == (10.0, 14_040, (512, 256, 256, 128, 128, 64))
    assert cub.generator.resolutions == (32, 32, 64, 64, 128, 128) and not cub.generator.single_conv_head
    assert (flowers.lambda_con, flowers.steps, flowers.generator.single_conv_head) == (30.0, 8_640, True)
    for cfg in (celeba, taichi, cub, flowers):
        g = cfg.generator
        assert (cfg.gp, cfg.con_reduce, cfg.area_target, cfg.segmenter.dice) == ("centred", "mean", "code", "per_image")
        assert (g.heatmap, g.bg_shift, g.coord_grid, g.mask_resize, g.head_lrelu, g.mlp_depths) == \
            ("linear", "horizontal", "corners", "bilinear", True, (5, 4, 4))
        validate(cfg)
    # a preset's own values win over the dataset's; the user's over both
    quick_cub = GANSeg.config_for("quick", {"steps": "7"}, dataset="cub")
    assert quick_cub.generator.resolutions == (16, 32) and quick_cub.steps == 7 and quick_cub.lambda_con == 10.0
    assert set(DATASET_PRESETS) >= {"celeba_wild", "celeba_aligned", "taichi", "cub", "flowers"}


def test_paper_parameter_counts_equal_the_official_on_celeba_wild():
    """The official Generator / Discriminator at the released celeba_wild_k8 parameters have
    17,793,225 / 23,726,721 trainable parameters."""
    gen, disc = build_networks(GANSeg.config_for("paper", dataset="celeba_wild"), seed=0)
    assert sum(p.numel() for p in gen.parameters() if p.requires_grad) == 17_793_225
    assert sum(p.numel() for p in disc.parameters() if p.requires_grad) == 23_726_721


# ----------------------------------------------------------------------------- generator

def test_shapes_and_softmax_sums():
    cfg = smoke()
    gen, disc = build_networks(cfg, seed=0)
    out = gen(gen.sample_latent(3))
    assert out["images"].shape == (3, 3, 32, 32) and out["images"].abs().max() <= 1
    assert out["masks"].shape == (3, 4, 32, 32) and out["heatmaps"].shape == (3, 3, 32, 32)
    assert torch.allclose(out["masks"].sum(1), torch.ones(3, 32, 32), atol=1e-5)
    assert out["layout"].points.shape == (3, 12, 2) and out["layout"].points.abs().max() < 1
    assert disc(out["images"]).shape == (3,)


@pytest.mark.parametrize("overrides", [{"generator.spade_kernel": 3}, {"generator.spade_kernel": 1},
                                       {"generator.spade_kernel": 3, "generator.embed_dim": 16},  # learned shortcut
                                       {"generator.spade_kernel": 3, "generator.no_separate_bg": True},
                                       {"generator.spade_kernel": 3, "generator.no_points": True}])
def test_fast_paths_compute_the_code_function_with_the_same_gradients(overrides, monkeypatch, float64):
    """The two ways the generator saves work are the same function as the code's computation
    (dense style conv, every block on the full margin map, then a crop): style_conv=factored
    (per-image kernels on the K weight maps) and each branch's last block computed on the image
    area only. Outputs and every gradient to 1e-12 in float64."""
    def run(mode: str, crop_tail: bool) -> tuple[dict, dict]:
        with monkeypatch.context() as patch:
            if not crop_tail:  # no block's halo fits: every block runs on the full map
                patch.setattr(SPADEResBlock, "min_crop", 10 ** 6)
                patch.setattr(AdaINConvBlock, "min_crop", 10 ** 6)
            cfg = smoke(**overrides, **{"generator.style_conv": mode})
            gen, _ = build_networks(cfg, seed=0)
            gen.train()
            out = gen(gen.sample_latent(3, torch.Generator().manual_seed(1)))
        loss = (out["images"] * torch.linspace(-1, 1, out["images"].numel()).view_as(out["images"])).sum()
        (loss + (out["masks"] ** 2).sum()).backward()
        return out, {n: p.grad.clone() for n, p in gen.named_parameters() if p.grad is not None}

    code, code_grads = run("dense", crop_tail=False)
    variants = {name: run(*how) for name, how in {"dense_crop": ("dense", True), "factored_crop": ("factored", True),
                                                     "factored_full": ("factored", False)}.items()}
    assert any("shared" in n for n in code_grads)
    for name, (out, grads) in variants.items():
        for key in ("images", "masks"):
            torch.testing.assert_close(out[key], code[key], rtol=1e-12, atol=1e-12, msg=f"{name} {key}")
        assert grads.keys() == code_grads.keys()
        for param, grad in code_grads.items():
            torch.testing.assert_close(grads[param], grad, rtol=1e-10, atol=1e-12, msg=f"{name} {param}")


@pytest.mark.parametrize("switch", ["generator.no_points", "generator.no_separate_bg", "generator.fixed_sigma"])
def test_ablation_switches_build_and_generate(switch):
    cfg = smoke(**{switch: True, "generator.heatmap": "linear", "generator.bg_shift": "horizontal"})
    gen, _ = build_networks(cfg, seed=0)
    out = gen(gen.sample_latent(2))
    assert out["images"].shape == (2, 3, 32, 32)
    assert torch.allclose(out["masks"].sum(1), torch.ones(2, 32, 32), atol=1e-5)
    assert (out["heatmaps"] is None) == (switch == "generator.no_points")


def _equivariance_setup():
    # equivariance is a property of the self-consistent grid and area pooling (the paper's text);
    # the code's corner grid is off by up to half a pixel per upsample (audit row 13)
    cfg = smoke(image_size=64, **{"generator.resolutions": (16, 32, 64), "generator.channels": (16, 8, 8),
                                  "generator.margin": 10, "generator.coord_grid": "pixel_centres",
                                  "generator.mask_resize": "area"})
    gen, _ = build_networks(cfg, seed=1)
    gen.train()
    with torch.no_grad():  # give BatchNorm non-trivial running statistics
        for _ in range(3):
            gen(gen.sample_latent(4))
    gen.eval()
    k, d = cfg.num_parts, cfg.generator.embed_dim
    g = torch.Generator().manual_seed(2)
    pts = 0.6 * torch.rand(2, k * cfg.n_per, 2, generator=g) - 0.3
    emb, bg_emb = torch.randn(2, k, d, generator=g), torch.randn(2, d, generator=g)
    bg = torch.rand(2, 1, 2, generator=g) - 0.5
    return gen, pts, emb, bg_emb, bg


DX, DY = 4, 8  # pixels at 64 px = 1 and 2 pixels of the coarsest (16 px) stage
SHIFT = torch.tensor([DX, DY]) * 2 / 64


def _assert_shifted(a: torch.Tensor, b: torch.Tensor, band: int) -> None:
    moved = b[..., DY:, DX:][..., band:-band, band:-band]
    still = a[..., :64 - DY, :64 - DX][..., band:-band, band:-band]
    assert torch.allclose(moved, still, atol=1e-4), (moved - still).abs().max()
    assert not torch.allclose(b, a, atol=1e-2)  # it did move


def test_translation_equivariance_of_masks():
    """Shift all points by whole pixels of the coarsest stage: the masks shift by the same pixels
    (eval-mode BatchNorm; the margins keep the border effects out of the image)."""
    gen, pts, emb, bg_emb, bg = _equivariance_setup()
    with torch.no_grad():
        a = gen.render(gen.layout_from_points(pts, emb, bg_emb, bg))
        b = gen.render(gen.layout_from_points(pts + SHIFT, emb, bg_emb, bg))
    _assert_shifted(a["masks"], b["masks"], band=0)
    _assert_shifted(a["heatmaps"], b["heatmaps"], band=0)


def test_translation_equivariance_of_images_for_an_object_inside_the_frame():
    """Points and background centre shifted together, with masks that are background along the
    border (the foreground branch pads masks by replication): images shift along, up to a band
    where the zero-padded RGB head sees the image edge."""
    gen, pts, emb, bg_emb, bg = _equivariance_setup()

    def localized_masks(points):
        lay = gen.layout_from_points(points, emb, bg_emb, bg)
        heat = heatmaps(lay.centres, torch.full_like(lay.sigma, 0.15), 64, 0, "gaussian", "pixel_centres")
        return torch.softmax(torch.cat([torch.full_like(heat[:, :1], 2.0), 12 * heat], dim=1), dim=1)

    with torch.no_grad():
        a = gen.render(gen.layout_from_points(pts, emb, bg_emb, bg), localized_masks(pts))
        b = gen.render(gen.layout_from_points(pts + SHIFT, emb, bg_emb, bg + SHIFT), localized_masks(pts + SHIFT))
    _assert_shifted(a["masks"], b["masks"], band=0)
    _assert_shifted(a["images"], b["images"], band=2)


def test_every_layer_has_its_own_parameters():
    """The `[layer] * 3` pitfall: a module listed twice shares its weights."""
    gen, disc = build_networks(smoke(), seed=0)
    for net in (gen, disc):
        assert len(list(net.named_modules(remove_duplicate=False))) == len(list(net.named_modules()))
        params = list(net.parameters())
        assert len({p.data_ptr() for p in params}) == len(params)
    for mlp, depth in zip((gen.point_mlp, gen.app_mlp, gen.bg_mlp), smoke().generator.mlp_depths):
        assert len([m for m in mlp if isinstance(m, torch.nn.Linear)]) == depth
    paper_gen, _ = build_networks(GANSeg.config_for("paper"), seed=0, discriminator=False)
    depths = [len([m for m in mlp if isinstance(m, torch.nn.Linear)])
              for mlp in (paper_gen.point_mlp, paper_gen.app_mlp, paper_gen.bg_mlp)]
    assert depths == [5, 4, 4]  # generator.py:152-172
    assert not torch.equal(gen.fg_blocks[0].conv2.weight[:1, :1], gen.fg_blocks[1].conv2.weight[:1, :1])


def test_validation_rejects_inconsistent_sizes():
    with pytest.raises(UserError):
        validate(smoke(image_size=64))  # resolutions end at 32
    with pytest.raises(UserError):
        validate(smoke(**{"generator.resolutions": (8, 32)}))  # x4 jump


# ----------------------------------------------------------------------------- training

def _ctx(run_dir, seed=3):
    return FitContext(seed=seed, run_dir=run_dir, progress=False)


def test_gan_resume_is_bit_identical(tmp_path):
    cfg = smoke(steps=4, checkpoint_every=2, gp_every=3)
    data = Images(n=6)  # batch 4 of 6 images: a snapshot in the middle of an epoch
    straight, _ = train_gan(cfg, data, _ctx(tmp_path / "a"))
    train_gan(replace(cfg, steps=2), data, _ctx(tmp_path / "b"))
    snapshot = torch.load(tmp_path / "b" / "checkpoints" / "training" / "gan" / "gan.pt", weights_only=True)
    assert snapshot["step"] == 2 and snapshot["extra"]["data_buffer"].numel() == 4  # 12 drawn, 8 used
    resumed, info = train_gan(cfg, data, _ctx(tmp_path / "b"))
    assert info["resumed_from_step"] == 2 and info["gan_steps_this_call"] == 2
    sa, sb = straight.state_dict(), resumed.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    _, info = train_gan(cfg, data, _ctx(tmp_path / "b"))  # finished: nothing to train
    assert info["gan_steps_this_call"] == 0
    with pytest.raises(UserError, match=r"different gan run \(changed: gp_weight\)"):
        train_gan(replace(cfg, gp_weight=1.0), data, _ctx(tmp_path / "b"))
    with pytest.raises(UserError, match=r"changed: seed"):
        train_gan(cfg, data, _ctx(tmp_path / "b", seed=4))


def test_gan_divergence_stops_with_the_last_finite_snapshot(tmp_path, monkeypatch):
    monkeypatch.setenv(INJECT_NAN_ENV, "gan@3")
    with pytest.raises(TrainingDiverged, match=r"gan training diverged at step 3: .*\(step 2\)"):
        train_gan(smoke(steps=4, checkpoint_every=2), Images(), _ctx(tmp_path))
    saved = torch.load(tmp_path / "checkpoints" / "training" / "gan" / "gan.pt", weights_only=True)
    assert saved["step"] == 2
    for net in ("generator", "discriminator"):
        assert all(torch.isfinite(t).all() for t in saved["modules"][net].values() if t.is_floating_point())


def test_fit_predict_sample_and_latent_interface(tmp_path):
    method = GANSeg(smoke())
    method.fit(Images(), FitContext(seed=0, run_dir=tmp_path, progress=False))
    probs = method.predict(torch.rand(2, 3, 40, 40)).part_probs
    assert probs.shape == (2, 4, 40, 40)
    assert (tmp_path / "figures" / "ganseg_samples_final.png").is_file()
    rows = [json.loads(line) for line in (tmp_path / "stats.jsonl").read_text().splitlines()]
    gan = [r for r in rows if r["phase"] == "gan"]
    assert [r["step"] for r in gan] == [2, 4]
    assert all({"loss_d", "loss_g_gan", "gp", "con", "area", "bg_area", "it_s", "peak_mem_mb"} <= set(r) for r in gan)
    seg = [r for r in rows if r["phase"] == "segmenter"]
    assert seg and all({"loss", "pixel_acc", "lr", "pair_time_frac"} <= set(r) for r in seg)
    info = json.loads((tmp_path / "fit_info.json").read_text())
    assert info["gan"]["gan_steps"] == 4 and info["segmenter"]["steps"] == 3
    training = tmp_path / "checkpoints" / "training"
    assert (training / "gan" / "gan.pt").is_file() and (training / "segmenter" / "segmenter.pt").is_file()
    z = method.sample_latent(2, torch.Generator().manual_seed(0)).requires_grad_(True)
    images, masks = method.generate_from_latent(z)
    assert z.shape == (2, method.latent_dim) and images.shape == (2, 3, 32, 32) and masks.shape == (2, 4, 32, 32)
    images.mean().backward()
    assert z.grad is not None and z.grad.abs().sum() > 0
    assert torch.equal(method.sample(2, seed=4), method.sample(2, seed=4))


def test_throughput_command_reports_speed_and_memory(capsys):
    import json

    from segbench.methods.ganseg.throughput import main

    assert main(["--preset", "smoke", "--steps", "2", "--warmup", "0", "--threads", "1"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["steps_timed"] == 2 and row["it_s"] > 0 and row["peak_rss_mib"] > 0
    assert row["generator_params"] > 0 and row["discriminator_params"] > 0
    assert main(["--preset", "smoke", "--steps", "0"]) == 2
