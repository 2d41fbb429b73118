"""A supervised segmenter trained on streamed (image, label) pairs, with exact resume.

Used by GANSeg (torchvision DeepLabV3-ResNet50, 0.5 cross-entropy + 0.5 per-image soft Dice,
Adam 3e-4, 10k steps of batch 64 at 128 px; the official train_seg.py) and by the
latent-direction method (the UNet of Melas-Kyriazi et al., cross-entropy, Adam 1e-3 at a
constant lr for 18k steps as the released code ran; its preset ``paper_a12`` is the paper's
A.1.2 schedule).

Every architecture takes images mapped from [0,1] to [-1,1] at ``image_size`` (GANSeg's
input range) and returns logits at that size; ``segment`` resizes real images to it and the
logits back to the input resolution.

A method keeps the trained segmenter in its own ``state_dict`` as ``model.state_dict()`` (plain
tensors) and rebuilds it with ``build_segmenter(config, num_classes, load_pretrained=False)``
followed by ``load_state_dict``. For ``fit`` resume, pass ``checkpoint_dir=ctx.checkpoint_dir("segmenter")``
and ``device=ctx.device`` to ``train_segmenter``.

Mixed precision and data parallelism (``methods.common.precision``, ``methods.common.parallel``):
every rank draws the global batch of pairs from the shared pair stream (so the stream, and any
surplus a source keeps, is the same on every rank), checks it, and trains on its contiguous slice;
the forward pass runs under the method's ``amp`` autocast, the loss is computed from float32
logits, and ``Updater.step`` averages the gradients over the ranks before Adam steps. BatchNorm
statistics are per rank (DistributedDataParallel's default).
"""
from __future__ import annotations

import contextlib
import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Literal

import torch
import torch.nn.functional as F
from torch import nn

from segbench.benchmark.config import domain, validate_config
from segbench.benchmark.errors import UserError
from segbench.methods.common.loop import Snapshot, run_steps
from segbench.methods.common.pairs import PairSource, check_pairs
from segbench.methods.common.parallel import world
from segbench.methods.common.precision import Updater
from segbench.methods.common.unet import UNet
from segbench.methods.context import StatsLog, resolve_device, to_device

ARCHS = ("deeplabv3_resnet50", "unet", "small_unet")
# torchvision's ImageNet ResNet50 files; IMAGENET1K_V1 (0676ba61) is what `pretrained=True` gave
# when GANSeg was written, so it is preferred when both are cached.
RESNET50_FILES = ("resnet50-0676ba61.pth", "resnet50-11ad3fa6.pth")
STAGE = "segmenter"  # the loop's stage: snapshots are checkpoint_dir / "segmenter.pt", stats phase "segmenter"
PAIR_SEED_OFFSET = 7919  # the pair stream's generator is seeded apart from the model-init RNG
# Fields that may change between a run and its resumption: they do not change what a training
# snapshot means (run length, logging and snapshot intervals, and the learning rate, so a
# diverged run can be continued from its last finite snapshot with a smaller one).
RESUMABLE_FIELDS = ("steps", "checkpoint_every", "log_every", "lr")


@dataclass(frozen=True)
class SegmenterConfig:
    arch: Literal["deeplabv3_resnet50", "unet", "small_unet"] = "deeplabv3_resnet50"
    steps: int = domain(10_000, ge=0)
    batch_size: int = domain(64, ge=2)  # >= 2: BatchNorm (and DeepLab's pooled ASPP branch) train on it
    lr: float = domain(3e-4, gt=0)
    betas: tuple[float, float] = domain((0.9, 0.999), ge=0, lt=1)
    loss: Literal["ce_dice", "ce"] = "ce_dice"  # GANSeg: 0.5 CE + 0.5 soft Dice over K+1 channels
    ce_weight: float = domain(0.5, ge=0)  # weights of the "ce_dice" loss (GANSeg: 0.5 / 0.5)
    dice_weight: float = domain(0.5, ge=0)
    # Soft Dice (soft_dice_loss): "per_image" = the GANSeg code's (train_seg.py:57-61: per image
    # and channel, eps 1e-8, mean over both) | "batch" = pooled over the batch per channel with
    # smoothing dice_smooth.
    dice: Literal["per_image", "batch"] = "per_image"
    dice_smooth: float = domain(1.0, ge=0)  # additive smoothing s of the "batch" Dice ratio
    lr_decay_at: int = domain(0, ge=0)  # 0 = constant lr; Melas: x0.2 at 8k steps
    lr_decay_factor: float = domain(0.2, gt=0)
    image_size: int = domain(128, ge=16, le=4096)  # segmenter input size; predictions are resized back
    # "unet": first width w (w-2w-4w-8w-8w; Melas 64-128-256-512-512)
    unet_width: int = domain(64, ge=1, le=4096)
    unet_levels: int = domain(5, ge=2, le=10)
    # "small_unet": the same UNet, narrower and shallower, for CPU presets
    small_unet_width: int = domain(16, ge=1, le=4096)
    small_unet_levels: int = domain(4, ge=2, le=10)  # 16-32-64-64
    pretrained_backbone: Literal["auto", "none"] = "auto"  # ImageNet ResNet50 from the torch cache if present
    checkpoint_every: int = domain(500, ge=0)  # training checkpoint every N steps (0 = only at the end)
    log_every: int = domain(25, ge=1)  # stats.jsonl row every N steps

    def validate(self, prefix: str = "") -> None:
        """Cross-field rules (``benchmark.config.validate_config`` calls this after the field domains)."""
        levels = {"unet": self.unet_levels, "small_unet": self.small_unet_levels}.get(self.arch)
        if levels is not None and self.image_size < 2 ** (levels - 1):
            raise UserError(f"{prefix}image_size={self.image_size}: a {levels}-level {self.arch} pools "
                            f"{levels - 1} times, so image_size must be >= {2 ** (levels - 1)}")


# ----------------------------------------------------------------------------- models

def find_imagenet_resnet50() -> Path | None:
    """The cached torchvision ImageNet ResNet50 file under ``torch.hub.get_dir()/checkpoints``, or None."""
    folder = Path(torch.hub.get_dir()) / "checkpoints"
    for name in RESNET50_FILES:
        if (folder / name).is_file():
            return folder / name
    others = sorted(folder.glob("resnet50-*.pth")) if folder.is_dir() else []
    return others[0] if others else None


def _load_resnet50_backbone(backbone: nn.Module, path: Path) -> None:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}  # classifier is not in the backbone
        backbone.load_state_dict(state, strict=True)
    except Exception as exc:  # a corrupt or foreign file in the cache is the user's to fix
        raise UserError(f"{path} is not a torchvision ResNet50 state dict ({type(exc).__name__}: "
                        f"{str(exc).splitlines()[0][:200]}); remove it or set pretrained_backbone=none") from exc


def _pretrained_path(config: SegmenterConfig) -> Path | None:
    """The ImageNet ResNet50 file a DeepLab segmenter starts from (``pretrained_backbone=auto``)."""
    if config.arch != "deeplabv3_resnet50" or config.pretrained_backbone != "auto":
        return None
    return find_imagenet_resnet50()


def _load_pretrained(model: nn.Module, config: SegmenterConfig) -> None:
    path = _pretrained_path(config)
    if path is not None:
        _load_resnet50_backbone(model.backbone, path)


def build_segmenter(config: SegmenterConfig, num_classes: int, *,
                    load_pretrained: bool = True) -> tuple[nn.Module, dict[str, Any]]:
    """Build the segmenter for ``num_classes`` (K+1) classes; never downloads anything.

    Returns ``(model, info)``; info has ``arch``, ``num_classes``, ``params`` and
    ``backbone_weights`` (``"imagenet:<path>"`` or ``"random_init"``; ``"not_applicable"``
    for the UNets). ``load_pretrained=False`` skips reading the ImageNet file, for callers
    that load a full trained state dict right after.
    """
    if num_classes < 2:
        raise UserError(f"a segmenter needs at least 2 classes (background + 1), got {num_classes}")
    if config.arch == "deeplabv3_resnet50":
        from torchvision.models.segmentation import deeplabv3_resnet50
        model = deeplabv3_resnet50(weights=None, weights_backbone=None, aux_loss=False,
                                   num_classes=num_classes)
        path = _pretrained_path(config)
        backbone = f"imagenet:{path}" if path is not None else "random_init"
        if load_pretrained and path is not None:
            _load_resnet50_backbone(model.backbone, path)
    elif config.arch == "unet":
        model, backbone = UNet(num_classes, width=config.unet_width, levels=config.unet_levels), "not_applicable"
    elif config.arch == "small_unet":
        model = UNet(num_classes, width=config.small_unet_width, levels=config.small_unet_levels)
        backbone = "not_applicable"
    else:
        raise UserError(f"unknown segmenter arch {config.arch!r}; choose one of {', '.join(ARCHS)}")
    info = {"arch": config.arch, "num_classes": num_classes, "backbone_weights": backbone,
            "params": sum(p.numel() for p in model.parameters())}
    return model, info


def model_logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Logits ``[B,C,h,w]``; torchvision segmentation models return a dict with ``"out"``."""
    out = model(x)
    return out["out"] if isinstance(out, dict) else out


def model_input(images: torch.Tensor, image_size: int, keep_aspect: bool = False) -> torch.Tensor:
    """[0,1] images at any size -> [-1,1] at ``image_size`` x ``image_size`` (antialiased bilinear
    resize), or with ``keep_aspect`` the shorter side at ``image_size`` and the aspect kept (for
    fully convolutional models run on non-square views)."""
    h, w = images.shape[-2:]
    if keep_aspect:
        scale = image_size / min(h, w)
        size = (max(1, round(h * scale)), max(1, round(w * scale)))
    else:
        size = (image_size, image_size)
    if (h, w) != size:
        images = F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=True)
    return images * 2 - 1


def _resize_labels(labels: torch.Tensor, image_size: int) -> torch.Tensor:
    if labels.shape[-2:] == (image_size, image_size):
        return labels
    return F.interpolate(labels[:, None].float(), size=(image_size, image_size), mode="nearest")[:, 0].long()


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def segment(model: nn.Module, images: torch.Tensor, config: SegmenterConfig,
            keep_aspect: bool = False) -> torch.Tensor:
    """images ``[B,3,H,W]`` in [0,1] -> softmax probabilities ``[B,C,H,W]`` at the input resolution.

    Resizes to ``config.image_size`` (``keep_aspect``: the shorter side, see ``model_input``), maps
    to [-1,1], runs the model in eval mode without gradients, upsamples the logits bilinearly to
    ``H x W`` and takes the softmax there. The result is on the images' device.
    """
    device = next(model.parameters()).device
    with torch.no_grad(), _eval_mode(model):
        logits = model_logits(model, model_input(images.to(device), config.image_size, keep_aspect))
        logits = F.interpolate(logits, size=images.shape[-2:], mode="bilinear", align_corners=False)
        return logits.softmax(dim=1).to(images.device)


# ----------------------------------------------------------------------------- losses

GANSEG_DICE_EPS = 1e-8  # train_seg.py:57 cal_dice_loss(ep=1e-8)


def soft_dice_loss(probs: torch.Tensor, labels: torch.Tensor, smooth: float = 1.0,
                   per_image: bool = False) -> torch.Tensor:
    """Soft Dice loss over all C channels, background included.

    With p = softmax probabilities ``[B,C,H,W]``, y = one-hot labels and sums over all pixels per
    channel c (and over the batch unless ``per_image``)::

        dice_c = (2 * sum(p_c * y_c) + s) / (sum(p_c) + sum(y_c) + s)
        loss   = 1 - mean over c (and over images b when per_image) of dice_c

    ``per_image=True, smooth=1e-8`` is GANSeg's cal_dice_loss (train_seg.py:57-61): every
    (image, part) pair weighs the same, so small parts count as much as large ones. It is 0 for
    a perfect one-hot prediction whatever s is; a larger s keeps a class absent from the batch
    from dominating the loss (its dice_c tends to 1 as its p_c -> 0).
    """
    onehot = F.one_hot(labels, probs.shape[1]).permute(0, 3, 1, 2).to(probs.dtype)
    dims = (-2, -1) if per_image else (0, 2, 3)
    inter = (probs * onehot).sum(dims)
    dice = (2 * inter + smooth) / (probs.sum(dims) + onehot.sum(dims) + smooth)
    return 1 - dice.mean()


def segmentation_loss(logits: torch.Tensor, labels: torch.Tensor,
                      config: SegmenterConfig) -> tuple[torch.Tensor, dict[str, float]]:
    """``ce``: cross-entropy; ``ce_dice``: ce_weight * CE + dice_weight * soft Dice (GANSeg 0.5/0.5)."""
    ce = F.cross_entropy(logits, labels)
    if config.loss == "ce":
        return ce, {"ce": ce}
    if config.loss == "ce_dice":
        probs = logits.softmax(dim=1)
        dice = soft_dice_loss(probs, labels, GANSEG_DICE_EPS, per_image=True) if config.dice == "per_image" \
            else soft_dice_loss(probs, labels, config.dice_smooth)
        return config.ce_weight * ce + config.dice_weight * dice, {"ce": ce, "dice": dice}
    raise UserError(f"unknown segmenter loss {config.loss!r}; choose ce or ce_dice")


def lr_scheduler(config: SegmenterConfig, optimizer: torch.optim.Optimizer) -> Any:
    """The step decay: ``lr`` before step ``lr_decay_at`` (0-based; 0 = never decays), ``lr *
    lr_decay_factor`` from it on (``MultiStepLR``, stepped once per training step); None when constant."""
    if not config.lr_decay_at:
        return None
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[config.lr_decay_at],
                                                gamma=config.lr_decay_factor)


# ----------------------------------------------------------------------------- training

def _check_config(config: SegmenterConfig) -> None:
    if config.batch_size < 2:  # training-mode BatchNorm (and DeepLab's pooled ASPP branch) fail on 1
        raise UserError(f"segmenter batch_size must be >= 2 (BatchNorm in training), got {config.batch_size}")
    for name in ("steps", "checkpoint_every", "lr_decay_at"):
        if getattr(config, name) < 0:
            raise UserError(f"segmenter {name} must be >= 0, got {getattr(config, name)}")
    if config.log_every < 1 or config.image_size < 16:
        raise UserError("segmenter log_every must be >= 1 and image_size >= 16")
    validate_config(config, prefix="segmenter.")  # every other field's domain (direct callers)


def train_segmenter(config: SegmenterConfig, source: PairSource, *, seed: int, device: str | torch.device,
                    stats: StatsLog | None = None, progress: bool = True, checkpoint_dir: Path | None = None,
                    amp: str = "off") -> tuple[nn.Module, dict[str, Any]]:
    """Train a segmenter with Adam on pairs streamed from ``source`` on ``device`` (the run's
    ``ctx.device``); returns (model in eval mode, info).

    The model is initialised from the global torch RNG seeded with ``seed`` and the pairs are
    drawn from a ``torch.Generator`` seeded with ``seed + PAIR_SEED_OFFSET``; both run inside
    ``torch.random.fork_rng``, so the caller's RNG state is left untouched. The loop is
    ``methods.common.loop``'s: stage ``"segmenter"``, a snapshot ``checkpoint_dir/segmenter.pt``
    (e.g. ``ctx.checkpoint_dir("segmenter")``; None = not resumable) every ``checkpoint_every``
    steps and at the end, continued bit-identically (on CPU) when one is there, a stop with the
    last finite snapshot on a NaN/inf loss, and every ``log_every`` steps a ``phase="segmenter"``
    row in ``stats`` (window means of the loss terms and the training-batch pixel accuracy, lr,
    it/s, images/s of the global batch, peak memory, world size, share of time spent drawing pairs).

    Per step: the global batch ``source.pairs(batch_size, pair_rng)`` is drawn and checked on
    every rank, trimmed to a multiple of the world size when a ``keep_surplus`` source returned
    more (several ranks only), and this rank keeps its slice (``world().local``); the forward pass
    runs under ``amp``'s autocast (``methods.common.precision``: ``off`` | ``bf16`` | ``fp16``),
    the loss on float32 logits, and ``Updater.step`` does zero_grad, backward, the gradient
    average over the ranks and Adam's step. ``amp`` joins the snapshot's settings unless it is
    ``off``. ``info`` gets ``amp`` (and fp16's loss scale) and ``world_size``.
    """
    _check_config(config)
    device = resolve_device(device)
    shard = world()
    per_rank = shard.local_size(config.batch_size, what="segmenter.batch_size")  # must split over the ranks
    if config.arch == "deeplabv3_resnet50" and per_rank < 2:  # the ASPP pooling branch's BatchNorm sees 1x1 maps
        raise UserError(f"segmenter.batch_size={config.batch_size} leaves {per_rank} image per process over "
                        f"{shard.size} processes; DeepLabV3 trains BatchNorm on >= 2 per process")
    updater = Updater(amp, device)
    num_classes = int(source.num_classes)
    settings = {**{k: v for k, v in dataclasses.asdict(config).items() if k not in RESUMABLE_FIELDS},
                "num_classes": num_classes, "seed": seed, **({"amp": amp} if amp != "off" else {})}
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        model, info = build_segmenter(config, num_classes, load_pretrained=False)
        model.to(device)
        optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, betas=tuple(config.betas))
        scheduler = lr_scheduler(config, optimizer)
        pair_rng = torch.Generator().manual_seed(seed + PAIR_SEED_OFFSET)
        snap = Snapshot(STAGE, checkpoint_dir, settings, modules={"model": model}, optimizers={"opt": optimizer},
                        schedulers={"lr": scheduler} if scheduler else {}, generators={"pairs": pair_rng},
                        get_extra=lambda: {"backbone_weights": info["backbone_weights"]},
                        set_extra=lambda extra: info.update(extra), device=device, lrs={"opt": config.lr},
                        updater=updater)
        if not snap.resume(config.steps):
            _load_pretrained(model, config)  # a fresh start: the ImageNet backbone, if any
        info["seed"] = seed
        at_least = bool(getattr(source, "keep_surplus", False))
        last: dict[str, Any] = {}

        first_step = snap.step

        def step(i: int) -> dict[str, torch.Tensor]:
            t0 = time.perf_counter()
            with torch.no_grad():
                images, labels = source.pairs(config.batch_size, pair_rng)  # the global batch
            # Value ranges (a host sync) on the first step and the stats steps only.
            check_pairs(images, labels, num_classes, config.batch_size, at_least=at_least,
                        values=i == first_step or (i + 1) % config.log_every == 0)
            timing["pairs"] += time.perf_counter() - t0
            usable = images.shape[0] - images.shape[0] % shard.size  # a surplus batch: a multiple of the ranks
            images, labels = shard.local(images[:usable], labels[:usable])
            x = model_input(to_device(images, device), config.image_size)
            y = _resize_labels(to_device(labels, device), config.image_size)
            last["lr"] = optimizer.param_groups[0]["lr"]
            with updater.autocast():
                logits = model_logits(model, x)
            logits = logits.float()
            loss, terms = segmentation_loss(logits, y, config)
            updater.step(loss, optimizer, "opt")
            last["terms"] = {"loss": loss, **terms, "pixel_acc": (logits.detach().argmax(1) == y).float().mean()}
            return last["terms"]

        def on_log() -> dict[str, float]:
            now = time.perf_counter()
            row = {"lr": last["lr"], "pair_time_frac": timing["pairs"] / max(now - timing["t0"], 1e-9)}
            timing.update(pairs=0.0, t0=now)
            return row

        model.train()
        timing = {"pairs": 0.0, "t0": time.perf_counter()}  # seconds spent drawing pairs in this stats window
        report = run_steps(snap, config.steps, step, log_every=config.log_every,
                           checkpoint_every=config.checkpoint_every, stats=stats, progress=progress,
                           desc=f"segmenter ({config.arch})", on_log=on_log, batch_size=config.batch_size)
    info.update(steps=report["steps"], steps_this_call=report["steps_this_call"],
                resumed_from_step=report["resumed_from_step"], train_seconds=report["seconds"],
                it_s=report["it_s"], images_s=report["images_s"], world_size=report["world_size"],
                **updater.describe(),
                final={k: float(v.detach()) for k, v in last["terms"].items()} if last else None)
    return model.eval(), info
