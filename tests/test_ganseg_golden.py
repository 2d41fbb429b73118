"""GANSeg equals the official code: golden tensors from xingzhehe/GANSeg (a3f5078), float64,
loaded through the official-format converter (methods/ganseg/official.py). Tolerances are the
ones ../shared/golden/ganseg/README.md gives for a float64 re-implementation."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from segbench.methods.common.segmenter import GANSEG_DICE_EPS, SegmenterConfig, segmentation_loss, soft_dice_loss
from segbench.methods.ganseg.discriminator import Discriminator
from segbench.methods.ganseg.generator import GANSegGenerator
from segbench.methods.ganseg.losses import (area_loss, area_target_code, concentration_loss, discriminator_gan_loss,
                                   generator_gan_loss, gradient_penalty)
from segbench.methods.ganseg.method import GANSeg
from segbench.methods.ganseg.official import (convert_discriminator, convert_generator, discriminator_channels,
                                     infer_config)
from segbench.methods.ganseg.layers import margin_grid

GOLDEN = Path(__file__).resolve().parents[2] / "shared" / "golden" / "ganseg"
CONFIGS = ("celeba_small", "cub_small", "flower_small")
pytestmark = [pytest.mark.skipif(not GOLDEN.is_dir(), reason=f"golden tensors not found at {GOLDEN}"),
              pytest.mark.usefixtures("one_thread", "float64")]
TRAIN = dict(atol=1e-10, rtol=1e-10)


def load(name: str, part: str) -> dict:
    return torch.load(GOLDEN / f"{name}_{part}.pt", weights_only=True)



def official_generator(name: str) -> tuple[GANSegGenerator, object]:
    """Our generator built from the official state's shapes + the run's parameters, loaded strictly."""
    args = json.loads((GOLDEN / f"{name}_args.json").read_text())
    state = load(name, "generator_state")
    config = infer_config(state, GANSeg.config_for("paper"), args["generator_hyper_paras"])
    gen = GANSegGenerator(config.generator, config.num_parts, config.n_per).double()
    gen.load_state_dict(convert_generator(state), strict=True)
    return gen, config


def run_generator(gen: GANSegGenerator, io: dict, train: bool) -> dict:
    gen.train(train)
    col_row = io["input_bg_trans"][:, 0].flip(-1)  # official (row, col) -> (x, y)
    layout = gen.layout_from_noise(io["input_input_noise0"], io["input_input_noise2"], io["input_input_noise1"],
                                   col_row)
    out = gen.render(layout)
    return {**out, "layout": layout}


def to_official_masks(masks: torch.Tensor) -> torch.Tensor:
    return torch.cat([masks[:, 1:], masks[:, :1]], dim=1)  # background first -> last


def penalties(out: dict, config) -> tuple[torch.Tensor, torch.Tensor]:
    part_masks, layout = out["masks"][:, 1:], out["layout"]
    con = concentration_loss(part_masks, layout.centres, "mean", "corners")
    area = area_loss(part_masks, area_target_code(layout.points, config.n_per, config.image_size))
    return con, area


@pytest.mark.parametrize("name", CONFIGS)
def test_golden_generator_train_mode(name):
    gen, config = official_generator(name)
    io = load(name, "generator_io")
    out = run_generator(gen, io, train=True)
    lay = out["layout"]
    torch.testing.assert_close(lay.points.flip(-1), io["train_points"], **TRAIN)
    torch.testing.assert_close(lay.centres.flip(-1), io["train_keypoints"], **TRAIN)
    torch.testing.assert_close(lay.part_emb, io["train_kp_emb"], **TRAIN)
    torch.testing.assert_close(lay.bg_emb, io["train_bg_emb"], **TRAIN)
    torch.testing.assert_close(lay.sigma + 1e-6, io["train_tau_heatmap"], **TRAIN)
    torch.testing.assert_close(to_official_masks(out["masks"]), io["train_mask"], **TRAIN)
    if "train_init_mask" in io:
        torch.testing.assert_close(out["heatmaps"], io["train_init_mask"], **TRAIN)
    torch.testing.assert_close(out["head_out"], io["train_head_out"], **TRAIN)
    torch.testing.assert_close(out["images"], io["train_img"], **TRAIN)
    con, area = penalties(out, config)
    torch.testing.assert_close(con, io["train_center_penalty"], rtol=1e-10, atol=0)
    torch.testing.assert_close(area, io["train_area_penalty"], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", CONFIGS)
def test_golden_generator_eval_mode(name):
    gen, config = official_generator(name)
    io = load(name, "generator_io")
    out = run_generator(gen, io, train=False)
    if "eval_mask" in io:
        torch.testing.assert_close(to_official_masks(out["masks"]), io["eval_mask"], atol=1e-10, rtol=0)
    torch.testing.assert_close(out["head_out"], io["eval_head_out"], rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(out["images"], io["eval_img"], atol=1e-10, rtol=0)
    con, _ = penalties(out, config)
    torch.testing.assert_close(con, io["eval_center_penalty"], rtol=1e-10, atol=0)
    # the segmenter's labels: argmax over [background, parts] (train_seg.py:89)
    assert torch.equal(out["masks"].argmax(dim=1), io["eval_seg_labels"])


@pytest.mark.parametrize("name", CONFIGS)
def test_golden_discriminator_and_gan_losses(name):
    state, io, losses = load(name, "discriminator_state"), load(name, "discriminator_io"), load(name, "losses")
    channels, hidden = discriminator_channels(state)
    config = GANSeg.config_for("paper", {"discriminator.channels": channels, "discriminator.fc_hidden": hidden})
    disc = Discriminator(config.discriminator, 32).double()
    disc.load_state_dict(convert_discriminator(state), strict=True)
    gen_io = load(name, "generator_io")
    real = io["input_real_img"].clone().requires_grad_(True)
    d_real = disc(real)
    d_fake = disc(gen_io["train_img"])
    torch.testing.assert_close(d_real, io["d_real_out"], **TRAIN)
    torch.testing.assert_close(d_fake, io["d_fake_out"], **TRAIN)
    gp = config.gp_weight * gradient_penalty(d_real, real, config.gp)
    torch.testing.assert_close(gp, io["gradient_penalty"], rtol=1e-9, atol=0)
    (grad,) = torch.autograd.grad(d_real.sum(), real)
    torch.testing.assert_close(grad.flatten(1).norm(dim=1), io["grad_norm_real"], rtol=1e-9, atol=0)
    loss_d = discriminator_gan_loss(d_real, d_fake)
    torch.testing.assert_close(loss_d, losses["disc_gan_loss"], rtol=1e-10, atol=0)
    torch.testing.assert_close(loss_d + gp, losses["disc_loss_with_gp"], rtol=1e-10, atol=0)
    loss_g = generator_gan_loss(d_fake)
    torch.testing.assert_close(loss_g, losses["gen_gan_loss"], rtol=1e-10, atol=0)
    total = loss_g + losses["con_penalty_coef"] * losses["train_center_penalty"] \
        + losses["area_penalty_coef"] * losses["train_area_penalty"]
    torch.testing.assert_close(total, losses["gen_loss_with_penalties"], rtol=1e-10, atol=0)


@pytest.mark.parametrize("name", CONFIGS)
def test_golden_concentration_and_area_nontrivial_case(name):
    """The area penalty is 0 at init; the golden file adds a case with shrunken part masks."""
    gen, config = official_generator(name)
    io, losses = load(name, "generator_io"), load(name, "losses")
    xs, ys = margin_grid(32, 0, "corners")
    grid = torch.stack(torch.broadcast_tensors(ys, xs), dim=-1)  # (row, col) like the code
    assert torch.equal(grid, io["concentration_grid"])
    points, centres = io["train_points"].flip(-1), io["train_keypoints"].flip(-1)
    part_masks = io["train_mask"][:, :-1] * losses["area_case_kp_mask_scale"]
    target = area_target_code(points, config.n_per, config.image_size)
    torch.testing.assert_close(target, losses["area_target_px"], rtol=1e-10, atol=0)
    con = concentration_loss(part_masks, centres, config.con_reduce, config.generator.coord_grid)
    torch.testing.assert_close(con, losses["area_case_center_penalty"], rtol=1e-10, atol=0)
    area = area_loss(part_masks, target)
    torch.testing.assert_close(area, losses["area_case_area_penalty"], rtol=1e-10, atol=0)
    assert area > 0


def test_golden_segmenter_ce_and_dice():
    losses = load("celeba_small", "losses")
    logits, labels = losses["seg_logits"], losses["seg_labels"]
    dice = soft_dice_loss(logits.softmax(dim=1), labels, GANSEG_DICE_EPS, per_image=True)
    torch.testing.assert_close(dice, losses["seg_dice"], rtol=1e-10, atol=0)
    total, parts = segmentation_loss(logits, labels, SegmenterConfig())
    torch.testing.assert_close(parts["ce"], losses["seg_ce"], rtol=1e-10, atol=0)
    torch.testing.assert_close(total, losses["seg_loss"], rtol=1e-10, atol=0)


@pytest.mark.parametrize("name", CONFIGS)
def test_official_key_names_round_trip(name):
    """Every official generator key maps to one of ours and back (errors name official keys)."""
    from segbench.methods.ganseg.official import official_generator_key

    state = load(name, "generator_state")
    gen, config = official_generator(name)
    converted = convert_generator(state)
    assert set(converted) == set(gen.state_dict())
    back = {official_generator_key(k, config.generator.mlp_depths) for k in converted}
    assert back == set(state) - {"init_extend_coord"}
