"""GANSeg configuration: the released code's values as defaults, the paper's text as named switches.

Sources: the official code xingzhehe/GANSeg (commit a3f5078; ``file:line`` below are into it) and
its released ``log/gan_<dataset>/parameters.json``; He et al. CVPR 2022 §3 (eq. 1-19) and the
supplement (§B.4, Table 1, §F.4). ``../shared/docs/ganseg_code_audit.md`` lists every place where
the two disagree; the ``paper`` preset is the code (what produced the papers' numbers), and each
paper-text variant is one switch:

    switch (code default -> paper text)         source
    gp=centred -> r1                            train_gan.py:80-87 | eq. 15 cites R1 (Mescheder)
    con_reduce=mean -> sum                      generator.py:304-311 | eq. 16 sums over k
    area_target=code -> heatmap                 generator.py:318-322 pi*(tau*R/2)^2 | eq. 17 sum_p H_k
    generator.heatmap=linear -> gaussian        parameters.json use_linear=1 | eq. 1, 4
    generator.mlp_depths=5,4,4 -> 3,3,3         generator.py:152-172 | §3.1 "3-layer MLP"
    generator.coord_grid=corners -> pixel_centres  heatmaps.py:7-21 | eq. 12 (our self-consistent grid)
    generator.mask_resize=bilinear -> area      generator.py:398 | (unstated; area is shift-equivariant)
    generator.head_lrelu=true -> false          generator.py:439 | eq. 11 Conv(...)
    generator.bg_shift=horizontal -> both       generator.py:415 zeroes the row for ALL datasets |
                                                supplement §B.4 fixes the vertical only for Taichi
    steps=<released per dataset> -> 30000       train_gan.py:134-135,279 (30 epochs x min(n/64,1002))
                                                | supplement §B.4
    segmenter.dice=per_image -> batch           train_seg.py:57-61 | (papers silent)

Per-dataset values (``DATASET_PRESETS``, applied under every preset before the preset's own
overrides; from the released parameters.json and train_gan.py's epoch arithmetic):

    dataset        K   lambda_con  steps   resolutions / widths                     head
    celeba_wild    8   10          21,360  32,32,64,128 / 512,256,128,64            conv3-lrelu-conv3
    taichi         10  30          30,060  same                                     same
    cub            8   10          14,040  32,32,64,64,128,128 / 512,256,256,128,128,64  same
    flowers        8   30           8,640  same as cub                              one 1x1 conv
celeba_aligned has no released configuration: CelebA's values with the paper's K = 10 (Tab. 1).
faces_wild (real wild-CelebA faces here) takes celeba_wild's values.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from segbench.benchmark.config import MAX_PARTS, domain
from segbench.benchmark.errors import UserError
from segbench.methods.common.segmenter import RESUMABLE_FIELDS as SEGMENTER_RESUMABLE_FIELDS
from segbench.methods.common.segmenter import SegmenterConfig


@dataclass(frozen=True)
class GeneratorConfig:
    # D_noise of z_point, z_app and z_bg_app (§3.1; parameters.json z_dim)
    noise_dim: int = domain(256, ge=1, le=65536)
    embed_dim: int = domain(64, ge=1, le=65536)  # D_emb of the part/background embeddings (code: 64)
    # Linear layers of the (points, part appearance, background appearance) MLPs: the code has
    # 5 / 4 / 4 (generator.py:152-172); the paper says "3-layer MLP" (§3.1): 3,3,3.
    mlp_depths: tuple[int, int, int] = domain((5, 4, 4), ge=1, le=64)
    # Feature-map resolution of each generator stage (supplement §B.4: 32, 32, 64, 128); each
    # stage is x1 or x2 the previous one; the last one is the output image size.
    resolutions: tuple[int, ...] = domain((32, 32, 64, 128), ge=2, le=4096)
    # Input width of each stage's block in the foreground / background branches; stage i maps
    # channels[i] -> channels[i+1] and the last stage -> embed_dim (512 -> 256 -> 128 -> 64 -> 64).
    channels: tuple[int, ...] = domain((512, 256, 128, 64), ge=1, le=65536)
    # hidden width of the mask branch after its first block (code: = embed_dim)
    mask_width: int = domain(64, ge=1, le=65536)
    # How SPADE's first style conv is computed; both are the same function (float rounding
    # aside): "dense" convolves the D-channel style map sum_k W_k w_k as the code does;
    # "factored" convolves the K weight maps with per-image kernels (layers.FactoredStyle),
    # K/D the multiply-adds. An implementation choice, not a model change.
    style_conv: Literal["dense", "factored"] = "factored"
    spade_hidden: int = domain(128, ge=1, le=65536)  # width of the conv that turns the style map into gamma/beta
    # kernel of SPADE's style convs (odd; paper/code 3; 1 is far cheaper on a CPU)
    spade_kernel: int = domain(3, ge=1, le=15)
    adain_hidden: int = domain(128, ge=1, le=65536)  # width of the FC layer that turns the style vector into gamma/beta
    margin: int = domain(10, ge=0, le=1024)  # pixels of margin around every feature map (eq. 12)
    point_divisor: float = domain(20.0, gt=0)  # points = tanh(MLP(z) / 20) (generator.py:335)
    heatmap: Literal["gaussian", "linear"] = "linear"  # code: clamp(1 - d/tau, 0) | paper eq. 4
    bg_shift: Literal["both", "horizontal"] = "horizontal"  # code: vertical = 0 | paper: U[-1,1]^2
    single_conv_head: bool = False  # RGB head: conv3x3-lrelu-conv3x3 | one 1x1 conv (Flowers)
    head_lrelu: bool = True  # LeakyReLU(0.2) on the blended features before the head (code :439)
    # Coordinates of feature-map pixels: "corners" = the code's linspace(-1, 1, r) extended by
    # m pitches 2/(r-1) (heatmaps.py:7-21; loss grid linspace(-1,1,R), generator.py:284-285);
    # "pixel_centres" = (2j+1)/r - 1, consistent with the align_corners=False upsampling.
    coord_grid: Literal["corners", "pixel_centres"] = "corners"
    # Image-area masks -> stage resolution for the foreground styles: "bilinear" (align_corners
    # False, no antialias: generator.py:398) | "area" (average pooling, shift-equivariant).
    mask_resize: Literal["bilinear", "area"] = "bilinear"
    # Ablation switches (paper Figure 9, supplement Tables 2-4).
    no_points: bool = False  # AdaIN blocks from a learned constant instead of points/heatmaps/SPADE
    no_separate_bg: bool = False  # background generated as one more part (no AdaIN branch, no blend)
    fixed_sigma: bool = False  # sigma_k = fixed_sigma_value instead of the points' spread (eq. 1)
    # In [-1,1] image units (0.1 = 6.4 px at 128 px). The supplement's F.2 averages (0.00725 CelebA,
    # 0.010 Taichi, 0.0016 CUB, 0.0065 Flowers) are in the released code's own spread unit.
    fixed_sigma_value: float = domain(0.1, gt=0)
    # False replaces the SPADE/AdaIN BatchNorms by identities (no batch statistics anywhere in the
    # GAN). Not in the paper or the code: the test configuration in which data-parallel training
    # equals one-process training up to float reduction order (tests/test_distributed.py).
    batchnorm: bool = True


@dataclass(frozen=True)
class DiscriminatorConfig:
    # The code's discriminator (discriminator.py:7-59): residual blocks 3 -> 64 -> ... -> 512, each
    # conv3x3-lrelu-conv3x3-lrelu then a learned stride-2 conv3x3, skip conv1x1 stride 2,
    # (x + skip) / sqrt 2; no normalisation; head Linear(C*h*w, fc_hidden) - lrelu - Linear(., 1).
    channels: tuple[int, ...] = domain((64, 128, 256, 512, 512, 512), ge=1, le=65536)
    fc_hidden: int = domain(512, ge=1, le=65536)


@dataclass(frozen=True)
class GANSegConfig:
    num_parts: int = domain(8, ge=1, le=MAX_PARTS)  # K (wild CelebA K=8; Taichi K=10)
    n_per: int = domain(4, ge=2, le=64)  # points per part (supplement §B.4, Table 3)
    image_size: int = domain(128, ge=8, le=4096)  # GAN output and training size; must equal generator.resolutions[-1]
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)
    # ----- GAN training (supplement §B.4; train_gan.py, parameters.json)
    # Generator updates. The released runs: 30 epochs x min(n/64, 1002) steps (train_gan.py:134-
    # 135, 279) = 21,360 CelebA-wild (the default), 30,060 Taichi, 14,040 CUB, 8,640 Flowers
    # (DATASET_PRESETS); supplement §B.4 says 30,000.
    steps: int = domain(21_360, ge=0)
    batch_size: int = domain(64, ge=2)  # >= 2: the generator's SPADE/AdaIN BatchNorms train on it
    lr_g: float = domain(1e-4, gt=0)
    lr_d: float = domain(4e-4, gt=0)
    betas: tuple[float, float] = domain((0.5, 0.9), ge=0, lt=1)
    gp: Literal["r1", "centred"] = "centred"  # code: (||grad|| - 1)^2 | paper: R1 ||grad||^2
    gp_weight: float = domain(10.0, ge=0)  # lambda_gp
    gp_every: int = domain(16, ge=1)  # penalty on every 16th discriminator step (code)
    # lambda_con: the released con_penalty_coef (10 CelebA/CUB, 30 Taichi/Flowers; supplement
    # Table 1 prints the same numbers).
    lambda_con: float = domain(10.0, ge=0)
    # The code averages the concentration term over batch AND parts (generator.py:304-311); eq. 16
    # sums over parts ("sum"), K times stronger at the same lambda_con (supplement §F.4 warns
    # that large values give trivial parts).
    con_reduce: Literal["sum", "mean"] = "mean"
    lambda_area: float = domain(1.0, ge=0)  # released area_penalty_coef; supplement Table 1
    # Area target per part: "code" = pi * (tau * R/2)^2 pixels with tau the mean |point - centre|
    # (generator.py:318-322, whatever the heatmap); "heatmap" = sum_p H_k(p) (eq. 17).
    area_target: Literal["code", "heatmap"] = "code"
    reg_every: int = domain(2, ge=1)  # concentration and area losses on every 2nd generator step (code)
    no_concentration: bool = False
    no_area: bool = False
    hflip: bool = True  # random horizontal flips of the real images (code, all datasets)
    # Mixed precision of the GAN and segmenter training (methods.common.precision): "off" = fp32,
    # as the paper's runs trained; "bf16" | "fp16" autocast (fp16 with loss scaling).
    amp: Literal["off", "bf16", "fp16"] = "off"
    # ----- segmenter on generated pairs (train_seg.py: DeepLabV3-ResNet50, 10 epochs of 64k pairs
    # = 10k x 64, Adam 3e-4, 0.5 CE + 0.5 per-image Dice)
    segmenter: SegmenterConfig = field(default_factory=SegmenterConfig)
    # ----- bookkeeping (the device is the run's: --device, FitContext.device)
    log_every: int = domain(25, ge=1)  # stats.jsonl row every N generator steps
    sample_every: int = domain(1000, ge=0)  # sample grid (images, points, masks) every N steps (0 = only at the end)
    checkpoint_every: int = domain(500, ge=0)  # training snapshot every N steps (0 = only at the end)
    preload_max_mb: int = domain(2048, ge=0)  # keep the training images in memory (uint8) when they fit
    # torch CPU threads during fit/predict/sample (0 = leave torch's setting; --threads wins during
    # fit). Tiny networks on a busy machine run many times faster on one thread than on several.
    num_threads: int = domain(0, ge=0, le=4096)

    def validate(self) -> None:
        """Cross-field rules (``benchmark.config.validate_config`` calls this after the field domains)."""
        validate(self)


# Fields (dotted) that ``run --resume DIR --set key=value`` may change: they do not change what a
# training snapshot means (run length, logging / sample / snapshot intervals, threads, the preload
# budget, and the learning rates, so a diverged run can continue from its last finite snapshot
# with a smaller one). GANSeg.RESUMABLE_FIELDS is this tuple.
GAN_RESUMABLE_FIELDS = ("steps", "log_every", "sample_every", "checkpoint_every", "preload_max_mb", "num_threads",
                        "lr_g", "lr_d")
RESUMABLE_FIELDS = GAN_RESUMABLE_FIELDS + tuple(f"segmenter.{name}" for name in SEGMENTER_RESUMABLE_FIELDS)
# Left out of the GAN stage's snapshot settings: the resumable fields and the whole segmenter
# (stage 2 has its own snapshot, which checks its own settings).
GAN_SNAPSHOT_EXCLUDES = GAN_RESUMABLE_FIELDS + ("segmenter",)

# Per-dataset values of the released runs (see the module docstring), keyed by dataset name.
_SIX_STAGES = {"generator.resolutions": (32, 32, 64, 64, 128, 128),
               "generator.channels": (512, 256, 256, 128, 128, 64)}
DATASET_PRESETS = {
    "celeba_wild": {},
    "faces_wild": {},
    "celeba_aligned": {"num_parts": 10},
    "taichi": {"num_parts": 10, "lambda_con": 30.0, "steps": 30_060},
    "cub": {**_SIX_STAGES, "steps": 14_040},
    "flowers": {**_SIX_STAGES, "lambda_con": 30.0, "steps": 8_640, "generator.single_conv_head": True},
}

PRESETS = {
    "paper": {},
    # A 32 px GAN (stages 16, 32) with narrow branches, a 4-px margin, 1x1 SPADE style convs and
    # batch 16: not the paper's scale; the structure and losses are the released code's. One thread
    # so that results do not depend on the machine's core count. Measured on the released settings
    # (issue 12), synthetic_parts seeds 0/1/2: fg IoU 0.097/0.092/0.093 (centre_prior 0.123),
    # landmark error 103.4/113.2/104.4 % (centre_prior 125.6 %), ~25 min per run with 2-4 runs on
    # the 2 cores. At 32 px the code's linear heatmap (tau ~0.04 vs a pixel pitch of 0.065) covers
    # under a pixel, the points stay clustered and the parts hardly move. Seed 0 with
    # generator.heatmap=gaussian: 0.109 / 95.2 %; with generator.point_divisor=5: 0.097 / 98.5 %.
    # The project's pre-issue-12 settings (R1, Gaussian heatmap, pixel-centre grid, area-pooled
    # masks, 3-layer MLPs, an average-pool discriminator) gave 0.263/0.107/0.183 on the same seeds.
    "quick": {
        "image_size": 32,
        "generator.resolutions": (16, 32),
        "generator.channels": (64, 32),
        "generator.embed_dim": 32,
        "generator.mask_width": 32,
        "generator.spade_hidden": 32,
        "generator.spade_kernel": 1,
        "generator.adain_hidden": 64,
        "generator.noise_dim": 64,
        "generator.margin": 4,
        "discriminator.channels": (32, 64, 128),
        "steps": 1200,
        "batch_size": 16,
        "discriminator.fc_hidden": 128,
        "segmenter.arch": "small_unet",
        "segmenter.steps": 600,
        "segmenter.batch_size": 32,
        "segmenter.image_size": 64,
        "log_every": 20,
        "sample_every": 400,
        "checkpoint_every": 200,
        "num_threads": 1,
    },
    # Seconds: structure only (tests, conformance).
    "smoke": {
        "image_size": 32,
        "generator.resolutions": (16, 32),
        "generator.channels": (16, 8),
        "generator.embed_dim": 8,
        "generator.mask_width": 8,
        "generator.spade_hidden": 8,
        "generator.adain_hidden": 8,
        "generator.noise_dim": 16,
        "generator.mlp_depths": (2, 2, 2),
        "discriminator.channels": (8, 16),
        "discriminator.fc_hidden": 8,
        "steps": 4,
        "batch_size": 4,
        "gp_every": 2,
        "segmenter.arch": "small_unet",
        "segmenter.small_unet_width": 4,
        "segmenter.small_unet_levels": 2,
        "segmenter.steps": 3,
        "segmenter.batch_size": 2,
        "segmenter.image_size": 32,
        "segmenter.pretrained_backbone": "none",
        "log_every": 2,
        "sample_every": 0,
        "checkpoint_every": 2,
        "num_threads": 1,
    },
}


def validate(config: GANSegConfig) -> None:
    """Raise UserError for settings that cannot build or train a GANSeg model."""
    g = config.generator
    res = tuple(g.resolutions)
    if config.num_parts < 1 or config.n_per < 2:
        raise UserError(f"GANSeg needs num_parts >= 1 and n_per >= 2 (sigma divides by n_per - 1), "
                        f"got num_parts={config.num_parts}, n_per={config.n_per}")
    if not res or res[-1] != config.image_size:
        raise UserError(f"generator.resolutions {res} must end at image_size {config.image_size}")
    if any(b not in (a, 2 * a) for a, b in zip(res, res[1:])):
        raise UserError(f"generator.resolutions {res}: each stage must be x1 or x2 the previous one")
    if len(g.channels) != len(res):
        raise UserError(f"generator.channels {tuple(g.channels)} needs one width per stage of {res}")
    if g.channels[0] % 2 or min(g.channels) < 1:
        raise UserError("generator.channels[0] must be even (sin/cos halves of the positional encoding)")
    if g.margin < 0 or len(g.mlp_depths) != 3 or min(g.mlp_depths) < 1 or g.noise_dim < 1 or g.embed_dim < 1:
        raise UserError("generator margin must be >= 0, mlp_depths three values >= 1 (points, part "
                        "appearance, background), noise_dim and embed_dim >= 1")
    if g.coord_grid == "corners" and min(res) < 2:
        raise UserError("generator.coord_grid=corners needs every resolution >= 2 (pitch 2/(r-1))")
    d = tuple(config.discriminator.channels)
    if not d or min(d) < 1 or config.discriminator.fc_hidden < 1:
        raise UserError(f"discriminator.channels {d} and discriminator.fc_hidden must be >= 1")
    if config.batch_size < 2:
        raise UserError(f"batch_size must be >= 2 (BatchNorm in training), got {config.batch_size}")
    for name in ("steps", "log_every", "sample_every", "checkpoint_every", "gp_every", "reg_every"):
        if getattr(config, name) < 0:
            raise UserError(f"{name} must be >= 0, got {getattr(config, name)}")
    if config.log_every == 0 or config.gp_every == 0 or config.reg_every == 0:
        raise UserError("log_every, gp_every and reg_every must be >= 1")
    if g.spade_kernel % 2 == 0:
        raise UserError(f"generator.spade_kernel={g.spade_kernel}: must be odd (the style convs keep the map size)")
