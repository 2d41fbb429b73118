"""The shared segmenter component: losses on hand-computed cases, shapes, learning, exact resume,
the lr schedule and divergence stops."""
from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from segbench.benchmark.errors import UserError
from segbench.methods.common.loop import INJECT_NAN_ENV, TrainingDiverged
from segbench.methods.common.pairs import FunctionPairSource, PairSource, check_pairs
from segbench.methods.common.segmenter import (GANSEG_DICE_EPS, SegmenterConfig, build_segmenter, lr_scheduler,
                                               segment, segmentation_loss, soft_dice_loss, train_segmenter)
from segbench.methods.context import StatsLog
from segbench.methods.common.unet import unet_widths

# 2x2 image, 2 classes: labels and the probability of class 1 per pixel.
LABELS = torch.tensor([[[0, 1], [1, 1]]])
P1 = torch.tensor([[[0.2, 0.6], [0.9, 0.5]]])
PROBS = torch.stack([1 - P1, P1], dim=1)  # [1,2,2,2]

TINY = SegmenterConfig(arch="small_unet", small_unet_width=4, small_unet_levels=3, image_size=16,
                       batch_size=4, steps=6, lr=1e-2, checkpoint_every=2, log_every=2)


def square_pairs(batch_size: int, generator: torch.Generator, size: int = 24):
    """Bright square (label 1) on a dark noisy background; the noise comes from the GLOBAL torch
    RNG on purpose, so resume tests also cover the saved global RNG state."""
    images = 0.1 + 0.1 * torch.rand(batch_size, 3, size, size)
    labels = torch.zeros(batch_size, size, size, dtype=torch.int64)
    corners = torch.randint(0, size // 2, (batch_size, 2), generator=generator)
    sides = torch.randint(size // 4, size // 2, (batch_size,), generator=generator)
    for i in range(batch_size):
        y, x, s = corners[i, 0], corners[i, 1], sides[i]
        images[i, :, y:y + s, x:x + s] += 0.7
        labels[i, y:y + s, x:x + s] = 1
    return images, labels


SQUARES = FunctionPairSource(2, square_pairs)


pytestmark = pytest.mark.usefixtures("one_thread")


def test_soft_dice_hand_computed():
    # channel 0: y=[1,0,0,0], p=[.8,.4,.1,.5] -> inter .8, sums 1.8 + 1
    # channel 1: y=[0,1,1,1], p=[.2,.6,.9,.5] -> inter 2.0, sums 2.2 + 3
    # s=0: 1 - (1.6/2.8 + 4/5.2)/2 = 30/91 ; s=1: 1 - (2.6/3.8 + 5/6.2)/2 = 150/589
    assert soft_dice_loss(PROBS, LABELS, smooth=0.0).item() == pytest.approx(30 / 91, abs=1e-6)
    assert soft_dice_loss(PROBS, LABELS, smooth=1.0).item() == pytest.approx(150 / 589, abs=1e-6)


def test_soft_dice_zero_for_perfect_prediction():
    onehot = F.one_hot(LABELS, 2).permute(0, 3, 1, 2).float()
    for smooth in (0.0, 1.0):
        assert soft_dice_loss(onehot, LABELS, smooth) == pytest.approx(0.0, abs=1e-7)
    assert soft_dice_loss(1 - onehot, LABELS, 0.0) == pytest.approx(1.0, abs=1e-7)


def test_ganseg_per_image_dice_hand_computed():
    # one image: the same sums as above with eps 1e-8 instead of s -> 30/91
    assert soft_dice_loss(PROBS, LABELS, GANSEG_DICE_EPS, per_image=True).item() == pytest.approx(30 / 91, abs=1e-6)
    # two images: image 2 all background, predicted p0 = .5 everywhere. Per image and channel:
    # image 2, channel 0: 1 - 2*2/(2+4) = 1/3; channel 1 (absent): 1 - eps/(2 + eps) ~ 1.
    # mean over (b, c) = (1 - 1.6/2.8 + 1 - 4/5.2 + 1/3 + 1) / 4
    labels = torch.cat([LABELS, torch.zeros_like(LABELS)])
    probs = torch.cat([PROBS, torch.full_like(PROBS, 0.5)])
    expected = (1 - 1.6 / 2.8 + 1 - 4 / 5.2 + 1 / 3 + 1) / 4
    assert soft_dice_loss(probs, labels, GANSEG_DICE_EPS, per_image=True).item() == pytest.approx(expected, abs=1e-6)
    # the batch-pooled Dice weighs the absent class differently
    assert soft_dice_loss(probs, labels, 0.0).item() != pytest.approx(expected, abs=1e-3)


def test_loss_combination_weights():
    logits = PROBS.log()  # softmax(log p) = p
    ce = -(math.log(0.8) + math.log(0.6) + math.log(0.9) + math.log(0.5)) / 4
    dice = 30 / 91  # per image (the GANSeg code's), one image
    total, terms = segmentation_loss(logits, LABELS, SegmenterConfig())
    assert terms["ce"].item() == pytest.approx(ce, abs=1e-6)
    assert total.item() == pytest.approx(0.5 * ce + 0.5 * dice, abs=1e-6)
    total, _ = segmentation_loss(logits, LABELS, SegmenterConfig(dice="batch"))
    assert total.item() == pytest.approx(0.5 * ce + 0.5 * 150 / 589, abs=1e-6)
    total, _ = segmentation_loss(logits, LABELS, SegmenterConfig(ce_weight=0.3, dice_weight=0.7))
    assert total.item() == pytest.approx(0.3 * ce + 0.7 * dice, abs=1e-6)
    total, terms = segmentation_loss(logits, LABELS, SegmenterConfig(loss="ce"))
    assert total.item() == pytest.approx(ce, abs=1e-6) and set(terms) == {"ce"}


def _lrs(config: SegmenterConfig, steps: int) -> list[float]:
    """The lr of each of ``steps`` steps under ``lr_scheduler`` (stepped once per step)."""
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=config.lr)
    sched = lr_scheduler(config, opt)
    lrs = []
    for _ in range(steps):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        if sched is not None:
            sched.step()
    return lrs


def test_lr_step_decay():
    lrs = _lrs(SegmenterConfig(lr=1e-3, lr_decay_at=8000, lr_decay_factor=0.2), 8002)
    assert lrs[7999] == 1e-3 and lrs[8000] == pytest.approx(2e-4) and lrs[8001] == pytest.approx(2e-4)
    assert lr_scheduler(SegmenterConfig(lr=3e-4), torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=3e-4)) \
        is None  # lr_decay_at=0: constant


def test_training_applies_the_decay_and_logs_the_lr_of_each_step(tmp_path):
    stats = StatsLog(tmp_path / "stats.jsonl")
    train_segmenter(replace(TINY, steps=5, log_every=1, lr_decay_at=3), SQUARES, seed=0, device="cpu", stats=stats,
                    progress=False)
    rows = [json.loads(line) for line in (tmp_path / "stats.jsonl").read_text().splitlines()]
    assert [r["lr"] for r in rows] == pytest.approx([1e-2, 1e-2, 1e-2, 2e-3, 2e-3])
    assert all({"loss", "ce", "dice", "pixel_acc", "pair_time_frac", "it_s", "peak_mem_mb"} <= set(r) for r in rows)


def test_unet_widths_and_distinct_parameters():
    assert unet_widths(64, 5) == [64, 128, 256, 512, 512]
    assert unet_widths(16, 4) == [16, 32, 64, 64]
    for cfg in (SegmenterConfig(arch="unet", unet_width=8), SegmenterConfig(arch="small_unet"),
                SegmenterConfig(arch="deeplabv3_resnet50", pretrained_backbone="none")):
        model, info = build_segmenter(cfg, 3)
        params = list(model.parameters())
        assert len({p.data_ptr() for p in params}) == len(params), cfg.arch
        assert info["params"] == sum(p.numel() for p in params)
        assert all(type(v) is torch.Tensor for v in model.state_dict().values())
    model, _ = build_segmenter(SegmenterConfig(arch="unet"), 2)
    convs = [m.out_channels for m in model.encoder.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs[1::2] == [64, 128, 256, 512, 512]


def test_deeplab_backbone_weights_from_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    _, info = build_segmenter(SegmenterConfig(), 3)
    assert info["backbone_weights"] == "random_init"
    (tmp_path / "checkpoints").mkdir()
    cached = tmp_path / "checkpoints" / "resnet50-0676ba61.pth"
    from torchvision.models import resnet50
    torch.manual_seed(123)
    reference = {k: v.half() for k, v in resnet50().state_dict().items()}  # half: smaller file
    torch.save(reference, cached)
    model, info = build_segmenter(SegmenterConfig(), 3)
    assert info["backbone_weights"] == f"imagenet:{cached}"
    assert torch.equal(model.backbone.layer4[2].conv3.weight, reference["layer4.2.conv3.weight"].float())
    _, info = build_segmenter(SegmenterConfig(pretrained_backbone="none"), 3)
    assert info["backbone_weights"] == "random_init"
    cached.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="resnet50-0676ba61"):
        build_segmenter(SegmenterConfig(), 3)


def test_segment_shape_sums_and_resolution():
    cfg = replace(TINY, image_size=32)
    model, _ = build_segmenter(cfg, 3)
    model.train()
    images = torch.rand(2, 3, 40, 50)
    probs = segment(model, images, cfg)
    assert probs.shape == (2, 3, 40, 50)
    assert torch.allclose(probs.sum(1), torch.ones(2, 40, 50), atol=1e-5)
    assert model.training  # segment runs in eval mode but restores the caller's mode


def test_pair_checks_and_user_errors():
    assert isinstance(SQUARES, PairSource)
    images, labels = SQUARES.pairs(3, torch.Generator().manual_seed(0))
    check_pairs(images, labels, 2, 3)
    with pytest.raises(ValueError, match="labels must lie"):
        check_pairs(images, labels + 1, 2)
    with pytest.raises(ValueError, match="batch of 3"):
        check_pairs(images, labels, 2, 4)
    with pytest.raises(UserError, match="batch_size must be >= 2"):
        train_segmenter(replace(TINY, batch_size=1), SQUARES, seed=0, device="cpu", progress=False)
    # a source that keeps its surplus (latent_direction, as the released code) may return more
    check_pairs(images, labels, 2, 2, at_least=True)
    with pytest.raises(ValueError, match="at least 4"):
        check_pairs(images, labels, 2, 4, at_least=True)


class SurplusSquares:
    """Returns one pair more than asked for; allowed only with ``keep_surplus``."""

    num_classes = 2

    def __init__(self, keep_surplus: bool) -> None:
        self.keep_surplus, self.sizes = keep_surplus, []

    def pairs(self, batch_size, generator):
        self.sizes.append(batch_size + 1)
        return square_pairs(batch_size + 1, generator)


def test_trainer_takes_larger_batches_only_from_a_surplus_keeping_source():
    source = SurplusSquares(keep_surplus=True)
    train_segmenter(replace(TINY, steps=2), source, seed=0, device="cpu", progress=False)
    assert source.sizes == [5, 5]  # TINY.batch_size 4, trained on 5
    with pytest.raises(ValueError, match="batch of 5, asked for 4"):
        train_segmenter(replace(TINY, steps=2), SurplusSquares(keep_surplus=False), seed=0, device="cpu", progress=False)


def test_learns_a_bright_square(tmp_path):
    torch.manual_seed(0)
    cfg = SegmenterConfig(arch="small_unet", small_unet_width=8, small_unet_levels=3, image_size=24,
                          batch_size=8, steps=60, lr=1e-2, log_every=20)
    stats = StatsLog(tmp_path / "stats.jsonl")
    before = torch.get_rng_state()
    model, info = train_segmenter(cfg, SQUARES, seed=0, device="cpu", stats=stats, progress=False)
    assert torch.equal(before, torch.get_rng_state())  # caller's RNG untouched
    assert not model.training and info["steps"] == 60 and info["backbone_weights"] == "not_applicable"
    rows = [json.loads(line) for line in (tmp_path / "stats.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [20, 40, 60] and all(r["phase"] == "segmenter" for r in rows)
    images, labels = SQUARES.pairs(16, torch.Generator().manual_seed(99))
    accuracy = (segment(model, images, cfg).argmax(1) == labels).float().mean().item()
    assert accuracy > 0.98, accuracy  # all-background would score 0.90


def test_resume_is_bit_identical(tmp_path):
    cfg = replace(TINY, lr_decay_at=4)  # the decay comes after the resume: the scheduler is in the snapshot
    full, _ = train_segmenter(cfg, SQUARES, seed=3, device="cpu", progress=False)
    half_cfg = replace(cfg, steps=cfg.steps // 2)
    _, info = train_segmenter(half_cfg, SQUARES, seed=3, device="cpu", progress=False, checkpoint_dir=tmp_path)
    assert torch.load(tmp_path / "segmenter.pt", weights_only=True)["step"] == cfg.steps // 2
    torch.manual_seed(12345)  # the caller's global RNG must not matter
    resumed, info = train_segmenter(cfg, SQUARES, seed=3, device="cpu", progress=False, checkpoint_dir=tmp_path)
    assert info["resumed_from_step"] == cfg.steps // 2 and info["steps_this_call"] == cfg.steps // 2
    a, b = full.state_dict(), resumed.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    other, _ = train_segmenter(cfg, SQUARES, seed=4, device="cpu", progress=False)
    assert not torch.equal(other.head.weight, full.head.weight)
    # a finished checkpoint: calling again trains nothing and returns the same model
    again, info = train_segmenter(cfg, SQUARES, seed=3, device="cpu", progress=False, checkpoint_dir=tmp_path)
    assert info["steps_this_call"] == 0 and torch.equal(again.head.weight, full.head.weight)
    with pytest.raises(UserError, match="betas"):
        train_segmenter(replace(cfg, betas=(0.8, 0.99)), SQUARES, seed=3, device="cpu", progress=False,
                        checkpoint_dir=tmp_path)
    with pytest.raises(UserError, match="seed"):
        train_segmenter(cfg, SQUARES, seed=5, device="cpu", progress=False, checkpoint_dir=tmp_path)


def test_divergence_stops_with_the_last_finite_snapshot(tmp_path, monkeypatch):
    monkeypatch.setenv(INJECT_NAN_ENV, "segmenter@5")
    with pytest.raises(TrainingDiverged, match=r"segmenter training diverged at step 5: .*\(step 4\)"):
        train_segmenter(TINY, SQUARES, seed=0, device="cpu", progress=False, checkpoint_dir=tmp_path)
    saved = torch.load(tmp_path / "segmenter.pt", weights_only=True)
    assert saved["step"] == 4
    assert all(torch.isfinite(t).all() for t in saved["modules"]["model"].values() if t.is_floating_point())
