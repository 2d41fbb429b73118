"""GANSeg configuration: the paper's values as defaults, named presets for smaller machines.

Sources: He et al. CVPR 2022 §3 (architecture, eq. 1-19), supplement §B.4 / Table 1 / §F.4
(hyper-parameters), ../shared/docs/REFERENCE.md §2 (code-level facts the papers omit).

Per-dataset values (set them with ``--set``; the defaults are CelebA-in-the-wild):
    CelebA-wild  K=8   con_coef_per_part=1.25 (lambda_con 10)  bg_shift=both
    Taichi       K=10  con_coef_per_part=3    (lambda_con 30)  bg_shift=horizontal
    CUB          K=8   con_coef_per_part=1.25 (lambda_con 10)  generator.resolutions=32,32,64,64,128,128
    Flowers      K=8   con_coef_per_part=3.75 (lambda_con 30)  generator.resolutions=32,32,64,64,128,128
                                                               generator.single_conv_head=true
For the six-stage CUB/Flowers generators the papers give no widths; pass six
``generator.channels`` too (e.g. 512,512,256,256,128,64 - our choice, not the authors').
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from benchmark.errors import UserError
from methods.common.segmenter import SegmenterConfig


@dataclass(frozen=True)
class GeneratorConfig:
    noise_dim: int = 256  # D_noise of z_point, z_app and z_bg_app (§3.1, REFERENCE §2)
    embed_dim: int = 64  # D_emb of the part/background embeddings (code: 64)
    mlp_layers: int = 3  # "3-layer MLP" for points, part appearance and background appearance
    # Feature-map resolution of each generator stage (supplement §B.4: 32, 32, 64, 128); each
    # stage is x1 or x2 the previous one; the last one is the output image size.
    resolutions: tuple[int, ...] = (32, 32, 64, 128)
    # Input width of each stage's block in the foreground / background branches; stage i maps
    # channels[i] -> channels[i+1] and the last stage -> embed_dim (512 -> 256 -> 128 -> 64 -> 64).
    channels: tuple[int, ...] = (512, 256, 128, 64)
    mask_width: int = 64  # hidden width of the mask branch after its first block (code: = embed_dim)
    spade_hidden: int = 128  # width of the conv that turns the style map into gamma/beta
    spade_kernel: int = 3  # kernel of SPADE's style convs (paper/code 3; 1 is far cheaper on a CPU)
    adain_hidden: int = 128  # width of the FC layer that turns the style vector into gamma/beta
    margin: int = 10  # pixels of margin around every feature map (eq. 12)
    point_divisor: float = 20.0  # points = tanh(MLP(z) / 20) (REFERENCE §2)
    heatmap: Literal["gaussian", "linear"] = "gaussian"  # paper eq. 4 | code: clamp(1 - d/tau, 0)
    bg_shift: Literal["both", "horizontal"] = "both"  # paper: u_bg ~ U[-1,1]^2 | code: vertical = 0
    single_conv_head: bool = False  # RGB head: conv3x3-lrelu-conv3x3 | one 1x1 conv (Flowers)
    # Ablation switches (paper Figure 9, supplement Tables 2-4).
    no_points: bool = False  # AdaIN blocks from a learned constant instead of points/heatmaps/SPADE
    no_separate_bg: bool = False  # background generated as one more part (no AdaIN branch, no blend)
    fixed_sigma: bool = False  # sigma_k = fixed_sigma_value instead of the points' spread (eq. 1)
    # In [-1,1] image units (0.1 = 6.4 px at 128 px). The supplement's F.2 averages (0.00725 CelebA,
    # 0.010 Taichi, 0.0016 CUB, 0.0065 Flowers) are in the released code's own spread unit.
    fixed_sigma_value: float = 0.1


@dataclass(frozen=True)
class DiscriminatorConfig:
    # Residual stride-2 blocks 3 -> 64 -> ... -> 512, no normalisation, then FC to 1 (REFERENCE §2).
    channels: tuple[int, ...] = (64, 128, 256, 512, 512, 512)


@dataclass(frozen=True)
class GANSegConfig:
    num_parts: int = 8  # K (wild CelebA K=8; Taichi K=10)
    n_per: int = 4  # points per part (supplement §B.4, Table 3)
    image_size: int = 128  # GAN output and training size; must equal generator.resolutions[-1]
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)
    # ----- GAN training (supplement §B.4, REFERENCE §2)
    steps: int = 30_000  # generator updates (paper: 30k; released runs 21k CelebA / 30k Taichi)
    batch_size: int = 64
    lr_g: float = 1e-4
    lr_d: float = 4e-4
    betas: tuple[float, float] = (0.5, 0.9)
    gp: Literal["r1", "centred"] = "r1"  # paper: R1 ||grad||^2 | code: (||grad|| - 1)^2
    gp_weight: float = 10.0  # lambda_gp
    gp_every: int = 16  # penalty on every 16th discriminator step (code)
    # lambda_con = con_coef_per_part * K (supplement eq. 7, §F.4): 1.25 CelebA/CUB, 3 Taichi,
    # 3.75 Flowers, which gives supplement Table 1's 10 / 30 / 10 / 30 at K = 8 / 10 / 8 / 8.
    con_coef_per_part: float = 1.25
    # eq. 16 sums over the K parts (paper); the released code averages over them ("mean"),
    # which is K times weaker at the same lambda_con.
    con_reduce: Literal["sum", "mean"] = "sum"
    lambda_area: float = 1.0  # supplement Table 1
    reg_every: int = 2  # concentration and area losses on every 2nd generator step (code)
    no_concentration: bool = False
    no_area: bool = False
    hflip: bool = True  # random horizontal flips of the real images (code, all datasets)
    # ----- segmenter on generated pairs (paper §3, REFERENCE §2: DeepLabV3-ResNet50, 10k x 64)
    segmenter: SegmenterConfig = field(default_factory=SegmenterConfig)
    # ----- bookkeeping
    device: Literal["auto", "cpu", "cuda"] = "auto"
    log_every: int = 25  # stats.jsonl row every N generator steps
    sample_every: int = 1000  # sample grid (images, points, masks) every N steps (0 = only at the end)
    checkpoint_every: int = 500  # training checkpoint every N steps (0 = only at the end)
    preload_max_mb: int = 2048  # keep the training images in memory (uint8) when they fit
    # torch CPU threads during fit/predict/sample (0 = leave torch's setting). Tiny networks on a
    # busy machine run many times faster on one thread than on several contended ones.
    num_threads: int = 0


# Fields that may differ between an interrupted run and its continuation.
RESUMABLE_FIELDS = ("steps", "log_every", "sample_every", "checkpoint_every", "device", "preload_max_mb",
                    "num_threads", "segmenter")

PRESETS = {
    "paper": {},
    # A 32 px GAN (stages 16, 32) with narrow branches, a 4-px margin, 1x1 SPADE style convs and
    # batch 16: not the paper's scale; the structure and losses are unchanged. On this 2-core CPU:
    # 17.5 min with one thread while another run uses the other core (1,200 GAN steps at ~1.65
    # it/s, 600 segmenter steps), 11 min alone with num_threads=2. One thread so that results do
    # not depend on the machine's core count. synthetic_parts seeds 0/1/2: fg IoU
    # 0.263/0.107/0.183 (centre_prior 0.123). Tried on the weak seed 1 and rejected (fg IoU):
    # point_divisor 4 (0.080) or 2 (0.068); steps 2000 (0.104); fixed_sigma 0.15 (0.102) or 0.25
    # (0.114); and on seeds 0-2, tanh(MLP/5) with lr_g 4e-4 and con_reduce sum (0.08/0.16/0.02).
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
        "con_reduce": "mean",
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
        "generator.mlp_layers": 2,
        "discriminator.channels": (8, 16),
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


def lambda_con(config: GANSegConfig) -> float:
    """lambda_con(K) = C_con * K (supplement eq. 7)."""
    return config.con_coef_per_part * config.num_parts


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
    if g.margin < 0 or g.mlp_layers < 1 or g.noise_dim < 1 or g.embed_dim < 1:
        raise UserError("generator margin must be >= 0 and mlp_layers, noise_dim, embed_dim >= 1")
    d = tuple(config.discriminator.channels)
    if not d or config.image_size % (2 ** len(d)):
        raise UserError(f"image_size {config.image_size} must be divisible by 2^{len(d)} "
                        f"(one stride-2 block per discriminator.channels entry {d})")
    if config.batch_size < 2:
        raise UserError(f"batch_size must be >= 2 (BatchNorm in training), got {config.batch_size}")
    for name in ("steps", "log_every", "sample_every", "checkpoint_every", "gp_every", "reg_every"):
        if getattr(config, name) < 0:
            raise UserError(f"{name} must be >= 0, got {getattr(config, name)}")
    if config.log_every == 0 or config.gp_every == 0 or config.reg_every == 0:
        raise UserError("log_every, gp_every and reg_every must be >= 1")
