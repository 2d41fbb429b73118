"""Latent-direction segmenter: "Finding an Unsupervised Image Segmenter in Each of Your Deep
Generative Models" (Melas-Kyriazi, Rupprecht, Laina, Vedaldi, ICLR 2022), §3 and appendix A.

1. Take a generator (``generators.py``: a GAN trained here on the fit images, the packaged face
   DCGAN, a GANSeg run, or the user's own).
2. Find the light and dark latent directions v_l, v_d (``directions.py``, Eq. 1).
3. Stream (G(z), mask) pairs with the mask of Eq. 2 (or Eq. 3) and the refinement filters
   (``masks.py``), and train the UNet of appendix A.1.2 on them with the shared segmenter
   trainer (``methods.common.segmenter``). ``predict`` is that UNet: K = 1 (foreground).

Everything runs on ``ctx.device``; predictions come back on the images' device. The three trained
stages (DCGAN, directions, UNet) run at the precision ``amp`` (``methods.common.precision``; fp32
by default) and data-parallel under torchrun (``methods.common.parallel``). Run record:
``fit_info.json`` (``ctx.save_info``: which generator and what it saw, the direction summary,
pair counts, the segmenter's report), stats.jsonl rows ``generator`` / ``dcgan`` /
``direction_light`` / ``direction_dark`` / ``direction_summary`` (first/last loss, v_l . v_d) /
``pairs`` (per-filter counts) / ``segmenter``, and figures ``latent_shift_strip.png`` and
``generated_pairs.png`` (``ctx.figures_dir``). Each stage is a resumable training stage
(``ctx.checkpoint_dir``: ``dcgan``, ``direction_light``, ``direction_dark``, ``segmenter``): a
finished stage is loaded, an interrupted one continues where it stopped.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from segbench.benchmark.config import check_domains, domain, validate_config
from segbench.benchmark.errors import UserError
from segbench.methods.base import PARTS, Method
from segbench.methods.common.runtime import torch_threads
from segbench.methods.common.segmenter import RESUMABLE_FIELDS as SEGMENTER_RESUMABLE_FIELDS
from segbench.methods.common.segmenter import SegmenterConfig, build_segmenter, segment, train_segmenter
from segbench.methods.context import FitContext
from segbench.methods.latent_direction.directions import RESUMABLE_FIELDS as DIRECTION_RESUMABLE_FIELDS
from segbench.methods.latent_direction.directions import DirectionConfig, optimise_direction
from segbench.methods.latent_direction.generators import (GeneratorConfig, ModuleGenerator, build_pretrained_generator,
                                                 resolved_kind)
from segbench.methods.latent_direction.masks import MASK_RULES, MaskedPairStream, RefineConfig, resize_pairs

log = logging.getLogger("segbench")

SEGMENTER_STAGE = "segmenter"
LIGHT_SEED_OFFSET, DARK_SEED_OFFSET, FIGURE_SEED_OFFSET = 1, 2, 3
# (name, sign of Eq. 1's lambda, seed offset): v_l makes the centre lighter, v_d darker.
DIRECTIONS = (("light", 1.0, LIGHT_SEED_OFFSET), ("dark", -1.0, DARK_SEED_OFFSET))
N_FIGURE_PAIRS = 32


def _melas_unet() -> SegmenterConfig:
    # UNet 64-128-256-512-512, cross-entropy, Adam 1e-3, 128 px (appendix A.1.2). Run length and
    # schedule as the released code ran: config/segment.yaml 18,000 steps; on-the-fly batches of
    # >= 95 (gan_dataset.py:186-191; keep_surplus below);
    # its StepLR(8000, 0.2) is returned to Lightning without
    # interval "step" (segmentation/main.py:31), so it is stepped once per epoch and never decays
    # within the run: a constant lr. Preset "paper_a12" is the paper's A.1.2 text instead
    # (12,000 steps, x0.2 at step 8,000).
    return SegmenterConfig(arch="unet", steps=18_000, batch_size=95, lr=1e-3, loss="ce", lr_decay_at=0,
                           lr_decay_factor=0.2, image_size=128, unet_width=64, pretrained_backbone="none")


@dataclass(frozen=True)
class LatentDirectionConfig:
    num_parts: int = domain(1, ge=1, le=1)  # foreground only
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    direction: DirectionConfig = field(default_factory=DirectionConfig)
    mask_rule: Literal["both", "single", "single_dark"] = "both"  # Eq. 2 (both) or Eq. 3
    mask_shift: float = domain(5.0, gt=0)  # eps of Eqs. 2-3 when generating masks
    refine: RefineConfig = field(default_factory=RefineConfig)
    # Filling a training batch (masks.MaskedPairStream): "official" draws rounds until the batch is
    # full and raises after max_empty_rounds consecutive rounds where nothing passed (the released
    # code's @retry(tries=25), gan_dataset.py:273); "unfiltered" (this project before issue 12)
    # completes the batch with rejected samples after max_draw_rounds rounds.
    batch_fill: Literal["official", "unfiltered"] = "official"
    max_empty_rounds: int = domain(25, ge=1)
    max_draw_rounds: int = domain(20, ge=1)  # batch_fill="unfiltered" only
    # Keep every passing sample of the last draw round, so a batch holds >= segmenter.batch_size
    # pairs (the released code, gan_dataset.py:186-191); False trims to exactly batch_size.
    keep_surplus: bool = True
    segmenter: SegmenterConfig = field(default_factory=_melas_unet)
    # Test time: the released code runs its fully convolutional UNet on the evaluation view as given
    # (segmentation/main.py test_step; for the saliency sets a 128 x W aspect-kept image). True scales
    # a non-square view so its shorter side is segmenter.image_size and keeps the aspect; False
    # squashes it to image_size x image_size (methods.common.segmenter.segment). Square views are
    # the same either way.
    test_keep_aspect: bool = True
    figure_shifts: tuple[float, ...] = (-8.0, -4.0, -2.0, 0.0, 2.0, 4.0, 8.0)  # Figure 3's epsilons
    # Mixed precision of the DCGAN, direction-search and UNet training (methods.common.precision):
    # "off" = fp32, as the paper; "bf16" | "fp16" autocast (fp16 with loss scaling).
    amp: Literal["off", "bf16", "fp16"] = "off"

    def validate(self) -> None:
        """Cross-field rules and the domains of the generator / refine fields (their classes live in
        generators.py / masks.py); ``benchmark.config.validate_config`` calls this."""
        check_domains(self, GENERATOR_AND_REFINE_DOMAINS)
        if self.mask_rule not in MASK_RULES:
            raise UserError(f"mask_rule={self.mask_rule!r}: must be one of {', '.join(MASK_RULES)}")
        g = self.generator
        if resolved_kind(g) == "train":
            size = g.train_image_size
            if size & (size - 1):
                raise UserError(f"generator.train_image_size={size}: must be a power of two >= 8 (DCGAN)")


# Domains of the fields of GeneratorConfig (generators.py) and RefineConfig (masks.py).
GENERATOR_AND_REFINE_DOMAINS = {
    "generator.z_dim": {"ge": 1, "le": 65536},
    "generator.train_image_size": {"ge": 8, "le": 4096},
    "generator.g_width": {"ge": 1, "le": 65536},
    "generator.d_width": {"ge": 1, "le": 65536},
    "generator.train_steps": {"ge": 0},
    "generator.train_batch_size": {"ge": 2},  # BatchNorm in training
    "generator.train_lr": {"gt": 0},
    "generator.train_betas": {"ge": 0, "lt": 1},
    "generator.checkpoint_every": {"ge": 0},
    "generator.log_every": {"ge": 1},
    "refine.component_min_ratio": {"ge": 0, "le": 1},
    "refine.max_foreground_fraction": {"ge": 0, "le": 1},
    "refine.hist_bins": {"ge": 1, "le": 4096},
    "refine.hist_smooth": {"ge": 1, "le": 4096},
    "refine.hist_min_peaks": {"ge": 0},
}


class LatentDirection(Method):
    """Foreground segmenter trained on masks found by relighting a generator along latent directions."""

    Config = LatentDirectionConfig
    PRESETS = {
        "paper": {},
        # The paper's appendix A.1.2 schedule rather than the released code's (see _melas_unet).
        "paper_a12": {"segmenter.steps": 12_000, "segmenter.lr_decay_at": 8_000},
        # CPU minutes: a 32 px DCGAN trained for a few minutes, full direction search, small UNet.
        "quick": {"generator.train_image_size": 32, "generator.g_width": 32, "generator.d_width": 32,
                  "generator.train_steps": 1500, "generator.train_batch_size": 64,
                  "generator.checkpoint_every": 500,
                  "direction.steps": 300, "direction.batch_size": 32,
                  "segmenter.arch": "small_unet", "segmenter.steps": 600, "segmenter.batch_size": 32,
                  "segmenter.image_size": 64,
                  "segmenter.checkpoint_every": 200},
        "smoke": {"generator.train_image_size": 16, "generator.g_width": 8, "generator.d_width": 8,
                  "generator.z_dim": 16, "generator.train_steps": 3, "generator.train_batch_size": 4,
                  "generator.log_every": 1,
                  "direction.steps": 3, "direction.batch_size": 4, "direction.log_every": 1,
                  "max_draw_rounds": 2,
                  "segmenter.arch": "small_unet", "segmenter.steps": 2, "segmenter.batch_size": 4,
                  "segmenter.image_size": 32, "segmenter.log_every": 1},
    }
    produces = frozenset({PARTS})
    fixed_num_parts = 1
    # What ``run --resume DIR --set`` may change (the stages' snapshots leave them out).
    DATA_PARALLEL_BATCHES = ("generator.train_batch_size", "segmenter.batch_size")  # split over torchrun processes
    RESUMABLE_FIELDS = (("generator.train_steps", "generator.checkpoint_every", "generator.log_every",
                         "generator.train_lr")
                        + tuple(f"direction.{name}" for name in DIRECTION_RESUMABLE_FIELDS)
                        + tuple(f"segmenter.{name}" for name in SEGMENTER_RESUMABLE_FIELDS))

    def __init__(self, config: LatentDirectionConfig | None = None) -> None:
        super().__init__(config)
        if self.config.num_parts != 1:
            raise UserError(f"latent_direction segments foreground only (num_parts=1), got {self.config.num_parts}")
        validate_config(self.config)  # every field's domain, as config_for checks them
        self.model: torch.nn.Module | None = None
        self.v_light: torch.Tensor | None = None
        self.v_dark: torch.Tensor | None = None

    # ----- generator ---------------------------------------------------------------------
    def build_generator(self, train_images: Any, ctx: FitContext) -> Any:
        """The generator adapter on ``ctx.device``: a pretrained one, or a DCGAN trained here on
        ``train_images`` (resumable stage ``dcgan``)."""
        cfg = self.config.generator
        if resolved_kind(cfg) != "train":
            return build_pretrained_generator(cfg, ctx.device)
        from segbench.methods.latent_direction.dcgan import train_dcgan

        module, info = train_dcgan(cfg, train_images, ctx, amp=self.config.amp)
        first = train_images[0]
        return ModuleGenerator(module, cfg.z_dim, {
            "kind": "train", "architecture": "DCGAN", **info,
            "trained_on": f"the protocol's fit split, images only ({len(train_images)} images of "
                          f"{tuple(first.shape[1:])} px resized to {cfg.train_image_size} px), "
                          f"unlike the paper's generators, which never saw the evaluation data",
        })

    # ----- directions ----------------------------------------------------------------
    def find_directions(self, generator: Any, ctx: FitContext) -> dict[str, Any]:
        """v_l and v_d (Eq. 1 with +/- lambda) on ``ctx.device``, as the resumable stages
        ``direction_light`` and ``direction_dark``; a finished stage is loaded, not recomputed.
        Returns the unit vectors (CPU), the per-step losses, v_l . v_d and ``from_snapshot``
        (both stages were already finished)."""
        identity = generator_identity(generator)
        out: dict[str, Any] = {"z_dim": generator.z_dim, "seed": ctx.seed}
        loaded = []
        for name, sign, offset in DIRECTIONS:
            stage = f"direction_{name}"
            found = optimise_direction(generator, self.config.direction, sign=sign, seed=ctx.seed + offset,
                                       stage=stage, checkpoint_dir=ctx.checkpoint_dir(stage),
                                       settings={"generator": identity}, stats=ctx.stats, progress=ctx.progress,
                                       device=ctx.device, amp=self.config.amp)
            out[f"v_{name}"], out[f"losses_{name}"] = found.v, torch.tensor(found.losses)
            loaded.append(found.report["steps_this_call"] == 0 and found.report["resumed_from_step"] is not None)
        out["dot"] = float(out["v_light"] @ out["v_dark"])
        out["from_snapshot"] = all(loaded)
        return out

    def pair_stream(self, generator: Any, stats: Any = None) -> MaskedPairStream:
        cfg = self.config
        return MaskedPairStream(generator, self.v_light, self.v_dark, rule=cfg.mask_rule, shift=cfg.mask_shift,
                                refine_cfg=cfg.refine, fill=cfg.batch_fill, max_empty_rounds=cfg.max_empty_rounds,
                                max_rounds=cfg.max_draw_rounds, keep_surplus=cfg.keep_surplus, stats=stats)

    def save_figures(self, generator: Any, directory: Path, seed: int) -> list[Path]:
        from segbench.methods.latent_direction.figures import save_pair_grid, save_shift_strip

        directory.mkdir(parents=True, exist_ok=True)
        stream = self.pair_stream(generator)
        strip = directory / "latent_shift_strip.png"
        save_shift_strip(generator, self.v_light, self.v_dark, lambda z: self._raw_masks(stream, z), strip,
                         self.config.figure_shifts, seed=seed + FIGURE_SEED_OFFSET)
        images, masks = stream.pairs(N_FIGURE_PAIRS, torch.Generator().manual_seed(seed + FIGURE_SEED_OFFSET))
        pairs = directory / "generated_pairs.png"
        save_pair_grid(*resize_pairs(images, masks, max(images.shape[-1], 64)), pairs)
        return [strip, pairs]

    @staticmethod
    @torch.no_grad()
    def _raw_masks(stream: MaskedPairStream, z: torch.Tensor) -> torch.Tensor:
        """Masks of the rule for given codes, before refinement (the strip shows the rule itself)."""
        from segbench.methods.latent_direction.directions import gray
        from segbench.methods.latent_direction.masks import mask_from_grays

        g = stream.generator
        light = gray(g.generate(z + stream.shift * stream.v_light.to(z.device)))
        dark = gray(g.generate(z + stream.shift * stream.v_dark.to(z.device)))
        return mask_from_grays(light, gray(g.generate(z)), dark, stream.rule)

    # ----- Method interface ----------------------------------------------------------
    def fit(self, train_images: Any, ctx: FitContext) -> None:
        with torch_threads(ctx.num_threads):
            self._fit(train_images, ctx)

    def _fit(self, train_images: Any, ctx: FitContext) -> None:
        generator = self.build_generator(train_images, ctx)
        description = generator.describe()
        ctx.log(phase="generator", **description)
        log.info("latent_direction generator: %s", description)

        found = self.find_directions(generator, ctx)
        self.v_light, self.v_dark = found["v_light"], found["v_dark"]
        summary = direction_summary(found)
        ctx.log(phase="direction_summary", **summary)
        log.info("latent_direction directions: %s", summary)

        if ctx.figures_dir is not None:
            self.save_figures(generator, ctx.figures_dir, ctx.seed)
        stream = self.pair_stream(generator, ctx.stats)
        self.model, info = train_segmenter(self.config.segmenter, stream, seed=ctx.seed, stats=ctx.stats,
                                           progress=ctx.progress, checkpoint_dir=ctx.checkpoint_dir(SEGMENTER_STAGE),
                                           device=ctx.device, amp=self.config.amp)
        ctx.log(phase="pairs_total", **stream.counts.as_dict())
        ctx.log(phase="segmenter_done", **{k: v for k, v in info.items() if k != "final"})
        ctx.save_info({"generator": description, "directions": summary, "pairs": stream.counts.as_dict(),
                       "segmenter": info, "device": str(ctx.device), "amp": self.config.amp})

    def _predict(self, images: torch.Tensor) -> torch.Tensor:
        if self.model is None:
            raise RuntimeError("latent_direction: call fit() or load() before predict()")
        return segment(self.model, images, self.config.segmenter, keep_aspect=self.config.test_keep_aspect)

    def state_dict(self) -> dict[str, Any]:
        if self.model is None:
            return {}
        state = {f"segmenter.{k}": v.cpu() for k, v in self.model.state_dict().items()}
        return {**state, "v_light": self.v_light, "v_dark": self.v_dark}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            return
        self.v_light, self.v_dark = state["v_light"], state["v_dark"]
        model, _ = build_segmenter(self.config.segmenter, 2, load_pretrained=False)
        model.load_state_dict({k[len("segmenter."):]: v for k, v in state.items() if k.startswith("segmenter.")})
        self.model = model.eval()


def generator_identity(generator: Any) -> dict[str, Any]:
    """What a direction snapshot must agree on about its generator: its description without the
    training report (timings, device), as plain JSON values."""
    described = {k: v for k, v in generator.describe().items() if k != "training"}
    return json.loads(json.dumps(described, sort_keys=True, default=str))


def direction_summary(found: dict[str, Any]) -> dict[str, Any]:
    """v_l . v_d and the first and last loss of each direction (the ``direction_summary`` row)."""
    summary: dict[str, Any] = {"v_light_dot_v_dark": found["dot"], "directions_from_snapshot": found["from_snapshot"]}
    for name, _, _ in DIRECTIONS:
        losses = found[f"losses_{name}"]
        summary.update({f"{name}_loss_first": float(losses[0]) if len(losses) else None,
                        f"{name}_loss_last": float(losses[-1]) if len(losses) else None})
    return summary
