"""Liu et al. CVPR 2021 configuration: the paper's text as defaults, each released-code difference a switch.

Sources: the paper (``../shared/papers/004_*``: §3-4, appendix A.1-A.4, Tab. A1) and the authors'
code SlongLiu/UnsupKeypointsParts @ 4366244 (``file:line`` below); ``../shared/docs/liu_parts_spec.md``
collects both. Defaults are the paper; the released code, which is what produced the paper's
numbers, differs in the places below, one named field each (spec §8.1):

    field (paper default -> code)                    source
    layer3_stride=1 -> 2                             §4.1 "stride of layer3 to 1, 32x32" | every config
                                                     downsamplelast=True, resnet.py:157-159 (16x16 maps)
    init=paper_normal -> code_kaiming                §4.1 "N(0, 0.01)" | resnet.py:161-166 kaiming_normal
                                                     (fan_out), BN (1,0), head/decoder torch defaults
    arcface_scale=20 -> 30                           §4.1 s=20 | loss/arcloss.py default s=30.0
    arcface_rows=parts -> parts_plus_bg              Eq. 6 W in R^{KxL} | arcloss out_features=lm_numb (K+1)
    arcface_divide=parts -> parts_plus_bg            Eq. 6 1/K | localfeatloss.py:358-379 /(K+1)
    fg_reduce=mean -> sum                            Eq. 7 1/K | concentration_loss.py:116-126 sums parts
    bg_form=paper -> code                            Eq. 10-11 h=min(u,W-u,v,H-v) pixels |
                                                     concentration_loss.py:85-113 2*min(..)^2 on [0,1]+0.01
    perceptual.form=paper -> code                    A.2 sum_i w_i l_i | perceptualloss.py:259-262
                                                     sum_i w_i l_i * (sum_j l_j)/6
    loss_weights=code_order (as_printed)             Tab. A1's header order (rec, cls, fg, bg) does not
                                                     match any released config; read as (rec, fg, bg,
                                                     cls) three rows equal configs exactly (spec §2.6)

``perceptual.network``: the paper's ImageNet VGG-19 (``vgg19``, needs the torchvision file in the
torch cache), the offline TF-Inception of the FID code (``inception``) or a multi-scale pixel loss
(``pixel``); the run records which (``PerceptualLoss.describe()`` in fit_info.json).

``CODE_VARIANT`` lists the overrides that turn the paper's text into the released code's
configuration (``--set`` each of them); the code's 1,000-grid TPS cache is not implemented
(fresh warps every step, as the paper describes).

Ablations (Tab. 3): ``no_rec``, ``no_fg``, ``no_bg``, ``no_cls`` zero one term each.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from segbench.benchmark.config import MAX_PARTS, domain
from segbench.benchmark.errors import UserError


@dataclass(frozen=True)
class PerceptualConfig:
    """The reconstruction loss P (Eq. 5, A.2; perceptualloss.py:187-279)."""

    network: Literal["vgg19", "inception", "pixel"] = "vgg19"
    form: Literal["paper", "code"] = "paper"  # A.2 sum_i w_i l_i | code: * (sum_j l_j) / 6
    # The adaptive layer weights w_i = 1 / (running mean of l_i + 1e-6) are refreshed when the
    # per-layer meter holds this many entries (perceptualloss.py:266-271: 99, fed twice per step).
    refresh_every: int = domain(99, ge=1)
    # network=pixel only: the image and (levels - 1) successive 2x2 average poolings of it.
    pixel_levels: int = domain(1, ge=1, le=8)


@dataclass(frozen=True)
class TPSConfig:
    """Thin-plate-spline pair warps (A.1; tps_sampler.py:147-205), on [-1, 1] coordinates."""

    grid: int = domain(10, ge=2, le=64)  # control points per side (10 x 10)
    nonlinear_sd: float = domain(0.001, ge=0)  # w = 0.001 N(0,1) + 0.005 B N(0,1), B ~ Bernoulli(0.5)
    bernoulli_sd: float = domain(0.005, ge=0)
    translation_sd: float = domain(0.1, ge=0)  # tx, ty ~ N(0, 0.1^2)


# (lambda_rec, lambda_fg, lambda_bg, lambda_cls) per Tab. A1 row, as the code reads it
# ("code_order": columns are rec, fg, bg, cls; CUB row = configs/SCOPSP/SCOPSP_CUB_..._ARC_..._newtc.py:
# 123,134,144,153) and as the table's header prints it ("as_printed": rec, cls, fg, bg).
LOSS_WEIGHTS = {
    ("code_order", "faces"): (1.5, 1.5, 0.5, 1.0),
    ("code_order", "cub"): (1.5, 1.5, 0.3, 1.0),
    ("as_printed", "faces"): (1.5, 0.5, 1.0, 1.5),
    ("as_printed", "cub"): (1.5, 0.3, 1.0, 1.5),
}
WEIGHT_NAMES = ("rec", "fg", "bg", "cls")


@dataclass(frozen=True)
class LiuPartsConfig:
    num_parts: int = domain(8, ge=1, le=MAX_PARTS)  # K (Tab. 1: K = 4 and 8); channel 0 = background
    image_size: int = domain(128, ge=8, le=4096)  # whole image resized to 128 x 128 (A.1)
    # ----- networks (§4.1, A.3; network/scopsplus.py, network/resnet.py)
    appearance_blocks: tuple[int, int, int] = domain((3, 4, 6), ge=1, le=64)  # E_a: ResNet-34 layer1-3
    shape_blocks: tuple[int, int, int] = domain((2, 2, 2), ge=1, le=64)  # E_s: ResNet-18 layer1-3
    width: int = domain(64, ge=1, le=4096)  # layer1 width; L = 4 * width (256) feature channels
    # 1 (paper §4.1): part maps of image_size / 4 (32 x 32 at 128 px); 2 (every released config):
    # image_size / 8 (16 x 16), and the decoder's third upsampling is a transposed conv.
    layer3_stride: Literal[1, 2] = 1
    decoder_hidden: int = domain(32, ge=1, le=4096)  # h_channel of MyGenerator (widths 8h, 4h, 2h, h)
    init: Literal["paper_normal", "code_kaiming"] = "paper_normal"
    # ----- losses (§3.2-3.5, A.2; spec §2)
    perceptual: PerceptualConfig = field(default_factory=PerceptualConfig)
    arcface_scale: float = domain(20.0, gt=0)  # s: 20 (§4.1) | 30 (arcloss.py default)
    arcface_margin: float = domain(0.5, ge=0, lt=math.pi / 2)  # m = 0.5 (both)
    arcface_rows: Literal["parts", "parts_plus_bg"] = "parts"  # rows of W: K (Eq. 6) | K+1 (code)
    arcface_divide: Literal["parts", "parts_plus_bg"] = "parts"  # sum over parts / K (Eq. 6) | / (K+1) (code)
    fg_reduce: Literal["mean", "sum"] = "mean"  # L_fg over parts: 1/K (Eq. 7) | sum (code)
    bg_form: Literal["paper", "code"] = "paper"  # L_bg distance map: Eq. 11 | code (spec §2.4)
    loss_weights: Literal["code_order", "as_printed"] = "code_order"  # reading of Tab. A1 (spec §2.6)
    weights_row: Literal["faces", "cub"] = "faces"  # Tab. A1 row (CelebA/AFLW; CUB-1/2/3)
    # Explicit weights override the Tab. A1 entry (None: take it from loss_weights / weights_row).
    lambda_rec: float | None = domain(None, ge=0)
    lambda_fg: float | None = domain(None, ge=0)
    lambda_bg: float | None = domain(None, ge=0)
    lambda_cls: float | None = domain(None, ge=0)
    no_rec: bool = False  # Tab. 3 ablations: drop one term each
    no_fg: bool = False
    no_bg: bool = False
    no_cls: bool = False
    tps: TPSConfig = field(default_factory=TPSConfig)
    # ----- training (A.4; train_SCOPSP.py:90-106): Adam over every network and ArcFace's W,
    # constant lr (the StepLR is never stepped), coupled L2 weight decay, fp32
    batch_size: int = domain(32, ge=2)  # >= 2: BatchNorm trains on the batch (global with torchrun; BatchNorm per rank)
    lr: float = domain(1e-4, gt=0)
    weight_decay: float = domain(5e-4, ge=0)
    betas: tuple[float, float] = domain((0.9, 0.999), ge=0, lt=1)
    epochs: int = domain(30, ge=1)  # A.4
    steps: int = domain(0, ge=0)  # 0: ceil(epochs * N / batch_size) for N fit images
    # Mixed precision of the training (methods.common.precision): "off" = fp32, as the paper and
    # the code; "bf16" | "fp16" autocast of E_a, E_s and D (fp16 with loss scaling); the losses,
    # the perceptual network included, stay fp32.
    amp: Literal["off", "bf16", "fp16"] = "off"
    # ----- inference: how predict brings E_s's probabilities to the input size. "bilinear"
    # (align_corners=False; Liu's figures use bilinear too); "nearest": for an input that is an
    # integer multiple of the map, area pooling back to the native side (the ``liu`` regression
    # variant) then gives E_s's map exactly.
    predict_upsample: Literal["bilinear", "nearest"] = "bilinear"
    # ----- bookkeeping (the device is the run's: --device, FitContext.device)
    log_every: int = domain(25, ge=1)  # stats.jsonl row every N steps
    checkpoint_every: int = domain(500, ge=0)  # training snapshot every N steps (0 = only at the end)
    figure_count: int = domain(8, ge=0, le=64)  # samples in the end-of-fit figures (0 = none)
    preload_max_mb: int = domain(2048, ge=0)  # keep the fit images in memory (uint8) when they fit
    num_threads: int = domain(0, ge=0, le=4096)  # torch CPU threads (0 = leave; --threads wins in fit)

    def validate(self) -> None:
        """Cross-field rules (``benchmark.config.validate_config`` calls this after the domains)."""
        factor = map_stride(self)
        if self.image_size % factor:
            raise UserError(f"image_size={self.image_size}: must be a multiple of {factor} with "
                            f"layer3_stride={self.layer3_stride} (the decoder doubles the part map back to it)")
        if not any(self.weights().values()):
            raise UserError("every loss weight is 0 (no_rec/no_fg/no_bg/no_cls, lambda_*): nothing left to train")

    def weights(self) -> dict[str, float]:
        """The loss weights this run uses: Tab. A1 (``loss_weights``, ``weights_row``), each
        replaced by an explicit ``lambda_*`` and zeroed by its ablation switch."""
        table = dict(zip(WEIGHT_NAMES, LOSS_WEIGHTS[(self.loss_weights, self.weights_row)]))
        out = {}
        for name in WEIGHT_NAMES:
            explicit = getattr(self, f"lambda_{name}")
            out[name] = 0.0 if getattr(self, f"no_{name}") else float(table[name] if explicit is None else explicit)
        return out


def map_stride(config: LiuPartsConfig) -> int:
    """Image pixels per part-map pixel: stem /2, layer2 /2, layer3 /layer3_stride."""
    return 4 * config.layer3_stride


def native_map_size(config: LiuPartsConfig) -> int:
    """Side of the part map E_s emits (32 at 128 px with layer3_stride 1, 16 with 2)."""
    return config.image_size // map_stride(config)


def total_steps(config: LiuPartsConfig, num_images: int) -> int:
    """``steps``, or ceil(epochs * N / batch_size) when it is 0."""
    return config.steps or math.ceil(config.epochs * num_images / config.batch_size)


# The released code's configuration (spec §0, §6): set each to reproduce the code rather than the text.
CODE_VARIANT = {
    "layer3_stride": 2,
    "init": "code_kaiming",
    "arcface_scale": 30.0,
    "arcface_rows": "parts_plus_bg",
    "arcface_divide": "parts_plus_bg",
    "fg_reduce": "sum",
    "bg_form": "code",
    "perceptual.form": "code",
}

# Fields that ``run --resume DIR --set key=value`` may change: run length, logging and snapshot
# intervals, threads, the preload budget, the lr (to continue a diverged run with a smaller one) and
# the prediction upsampling (not used in training).
RESUMABLE_FIELDS = ("steps", "epochs", "log_every", "checkpoint_every", "figure_count", "preload_max_mb",
                    "num_threads", "lr", "predict_upsample")

# Per-dataset Tab. A1 rows (applied before any preset); K comes from the protocol.
DATASET_PRESETS = {"cub": {"weights_row": "cub"}}

PRESETS = {
    "paper": {},
    # About 0.7-1 CPU-second per step on one thread (spec §6/§6.1): 64 px, one BasicBlock per
    # stage, L = 128 appearance channels, 16 x 16 part maps, a pixel loss in place of VGG-19 (not
    # obtainable offline), the code's forms of L_fg, L_bg and ArcFace, kaiming init, lr 1e-3.
    # lambda_rec by measurement (900 steps, faces_wild seed 0, no_intercept error): the code's 1.5
    # gave 34.55 %, the spec's rescaled 12 (= 1.5 x 8, the VGG term's size) 37.44 %; the spec's
    # half-budget prototype found 12 better on synthetic_parts (69 vs 123 %), so
    # `--set lambda_rec=12` is the synthetic_parts setting the README reports beside it.
    "quick": {
        "image_size": 64,
        "appearance_blocks": (1, 1, 1),
        "shape_blocks": (1, 1, 1),
        "width": 32,
        "layer3_stride": 1,
        "decoder_hidden": 8,
        "init": "code_kaiming",
        "perceptual.network": "pixel",
        "arcface_scale": 30.0,
        "arcface_rows": "parts_plus_bg",
        "arcface_divide": "parts_plus_bg",
        "fg_reduce": "sum",
        "bg_form": "code",
        "lambda_rec": 1.5,
        "lambda_fg": 1.5,
        "lambda_bg": 0.3,
        "lambda_cls": 1.0,
        "batch_size": 16,
        "lr": 1e-3,
        "steps": 1200,
        "log_every": 25,
        "checkpoint_every": 100,
        "num_threads": 1,
    },
    # Seconds: structure only (tests, conformance).
    "smoke": {
        "image_size": 32,
        "appearance_blocks": (1, 1, 1),
        "shape_blocks": (1, 1, 1),
        "width": 8,
        "decoder_hidden": 4,
        "perceptual.network": "pixel",
        "batch_size": 4,
        "steps": 3,
        "log_every": 1,
        "checkpoint_every": 2,
        "figure_count": 2,
        "num_threads": 1,
    },
}
