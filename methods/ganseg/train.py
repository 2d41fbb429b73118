"""GANSeg adversarial training (paper §3.4, supplement §B.4) on the shared loop core.

One discriminator step and one generator step per iteration (the code's disc_iters = 1);
gradient penalty on every ``gp_every``-th discriminator step; concentration and area losses on
every ``reg_every``-th generator step. ``methods.common.loop`` does the rest: stage ``"gan"``,
snapshots in ``ctx.checkpoint_dir("gan")`` (both networks and optimisers, the step, the two
``torch.Generator``s of the loop (latents; data order and flips), the global torch RNG and the
rest of the current data epoch), so a run continued from a snapshot is bit-identical on CPU to
one that never stopped; a NaN/inf loss stops it with the last finite snapshot kept.

Data-parallel (``methods.common.parallel``): every rank draws the global batch's latents, image
indices and flips from the shared streams and keeps its slice; the generator's BatchNorms are
synchronised (the code's ``SynchronizedBatchNorm2d``); ``precision.Updater`` averages the
gradients and applies ``config.amp`` (the gradient penalty's discriminator pass stays fp32).
"""
from __future__ import annotations

import dataclasses
from typing import Any

import torch

from segbench.methods.common.images import EpochOrder, ImageStore
from segbench.methods.common.loop import Snapshot, run_steps
from segbench.methods.common.parallel import World, convert_sync_batchnorm, world
from segbench.methods.common.precision import Updater
from segbench.methods.context import FitContext, to_device
from segbench.methods.ganseg.config import GAN_SNAPSHOT_EXCLUDES, GANSegConfig
from segbench.methods.ganseg.discriminator import Discriminator
from segbench.methods.ganseg.figures import save_sample_grid
from segbench.methods.ganseg.generator import GANSegGenerator
from segbench.methods.ganseg.losses import (area_loss, area_target_code, concentration_loss, discriminator_gan_loss,
                                   generator_gan_loss, gradient_penalty)

STAGE = "gan"
# Offsets from the run seed for the loop's own generators (model init uses the seed itself).
NOISE_SEED, DATA_SEED, SAMPLE_SEED = 1, 2, 3


def build_networks(config: GANSegConfig, seed: int, *,
                   discriminator: bool = True) -> tuple[GANSegGenerator, Discriminator | None]:
    """Generator (and discriminator), initialised from ``seed`` without touching the caller's RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        gen = GANSegGenerator(config.generator, config.num_parts, config.n_per)
        disc = Discriminator(config.discriminator, config.image_size) if discriminator else None
    return gen, disc


def real_batch(store: ImageStore, order: EpochOrder, size: int, hflip: bool,
               shard: World = World()) -> torch.Tensor:
    """The next ``size`` real images in [-1, 1] (augmented afresh on every read when the dataset
    augments, as the code's DataLoader), each flipped horizontally with probability 1/2; only
    ``shard``'s slice of them is loaded (the draws are the global batch's)."""
    indices = torch.as_tensor(order.take(size))
    flip = torch.rand(size, generator=order.rng) < 0.5 if hflip else torch.zeros(size, dtype=torch.bool)
    indices, flip = shard.local(indices, flip)
    images = store.signed(indices)
    return torch.where(flip[:, None, None, None], images.flip(-1), images)


def snapshot_settings(config: GANSegConfig, seed: int) -> dict[str, Any]:
    """What a GAN snapshot must agree on to be continued: the config without its resumable fields
    and the segmenter (``GAN_SNAPSHOT_EXCLUDES``), plus the seed. Fields added after snapshots
    were written (``amp``, ``generator.batchnorm``) join only when they differ from the value
    those snapshots were trained with, so older snapshots stay resumable."""
    settings = {k: v for k, v in dataclasses.asdict(config).items() if k not in GAN_SNAPSHOT_EXCLUDES}
    if settings["amp"] == "off":
        del settings["amp"]
    if settings["generator"]["batchnorm"]:
        del settings["generator"]["batchnorm"]
    return {**settings, "seed": seed}


def area_targets(config: GANSegConfig, out: dict) -> torch.Tensor:
    """Per-part target areas [B, K] of the area loss (``config.area_target``), in fp32 (the
    points and heatmaps may come out of an autocast forward in 16 bits)."""
    if config.area_target == "code":
        return area_target_code(out["layout"].points.float(), config.n_per, config.image_size)
    return out["heatmaps"].float().sum(dim=(-2, -1))


def _mask_stats(out: dict) -> dict[str, float]:
    masks = out["masks"].detach()
    areas = masks.mean(dim=(0, 2, 3))  # fraction of the image per channel
    stats = {"bg_area": areas[0].item(), "part_area_mean": areas[1:].mean().item(),
             "part_area_min": areas[1:].min().item()}
    layout = out["layout"]
    if layout.sigma is not None:
        stats["sigma_mean"] = layout.sigma.detach().mean().item()
        stats["heatmap_area_mean"] = out["heatmaps"].detach().mean().item()
    return stats


def train_gan(config: GANSegConfig, train_images: torch.utils.data.Dataset,
              ctx: FitContext) -> tuple[GANSegGenerator, dict[str, Any]]:
    """Train generator and discriminator on ``ctx.device``; return (generator in eval mode, info).

    Stats rows (phase ``gan``): window means of ``loss_d``, ``loss_g_gan`` and, on the steps
    that have them, ``gp``, ``con`` and ``area``; the last batch's mask statistics; it/s and peak
    memory. Sample grids (images, points, masks) go to ``ctx.figures_dir``."""
    device, seed = ctx.device, ctx.seed
    settings = snapshot_settings(config, seed)
    shard = world()
    shard.local_size(config.batch_size)  # the global batch must split over the ranks
    generator, discriminator = build_networks(config, seed)
    generator = convert_sync_batchnorm(generator)  # the code's SynchronizedBatchNorm2d (several ranks)
    generator.to(device), discriminator.to(device)
    updater = Updater(config.amp, device)
    opt_g = torch.optim.Adam(generator.parameters(), lr=config.lr_g, betas=tuple(config.betas))
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=config.lr_d, betas=tuple(config.betas))
    noise_rng = torch.Generator().manual_seed(seed + NOISE_SEED)
    order = EpochOrder(len(train_images), torch.Generator().manual_seed(seed + DATA_SEED))
    snap = Snapshot(STAGE, ctx.checkpoint_dir(STAGE), settings,
                    modules={"generator": generator, "discriminator": discriminator},
                    optimizers={"opt_g": opt_g, "opt_d": opt_d},
                    generators={"noise": noise_rng, "data": order.rng},
                    get_extra=order.get_extra, set_extra=order.set_extra, device=device,
                    lrs={"opt_g": config.lr_g, "opt_d": config.lr_d}, updater=updater)
    if snap.resume(config.steps) and snap.step == config.steps:  # finished: only the generator is needed
        return generator.eval(), {"gan_steps": config.steps, "resumed_from_step": config.steps,
                                  "gan_steps_this_call": 0}
    with torch.random.fork_rng(devices=[]):  # loading the images never moves the loop's RNG
        store = ImageStore(train_images, config.image_size, config.preload_max_mb, what="GANSeg")
    sample_z = generator.sample_latent(16, torch.Generator().manual_seed(seed + SAMPLE_SEED))
    use_reg = not config.generator.no_points
    lam_con = 0.0 if config.no_concentration or not use_reg else config.lambda_con
    lam_area = 0.0 if config.no_area or not use_reg else config.lambda_area
    last: dict[str, Any] = {}

    def step(i: int) -> dict[str, torch.Tensor]:
        b = config.batch_size  # global; this rank computes its slice
        phase = ctx.phases(i)  # timing marks for the bench command (no-ops in a run)
        # ---- discriminator step (eq. 14-15, 18)
        with phase("d_step_g_forward"):
            x_real = to_device(real_batch(store, order, b, config.hflip, shard), device)
            z = to_device(shard.local(generator.sample_latent(b, noise_rng)), device)
            with torch.no_grad(), updater.autocast():
                x_fake = generator(z)["images"]
        penalise = i % config.gp_every == 0
        x_real.requires_grad_(penalise)
        with phase("d_step_d_forward"):
            with updater.autocast(enabled=not penalise):  # the penalty's pass stays fp32
                d_real = discriminator(x_real).float()
            with updater.autocast():
                d_fake = discriminator(x_fake).float()
            loss_d = discriminator_gan_loss(d_real, d_fake)
        terms = {}
        if penalise:
            with phase("d_step_penalty"):
                terms["gp"] = gradient_penalty(d_real, x_real, config.gp)
                loss_d = loss_d + config.gp_weight * terms["gp"]
        with phase("d_step_backward_adam"):
            updater.step(loss_d, opt_d, "d")
        # ---- generator step (eq. 13, 16-17, 19)
        with phase("g_step_g_forward"):
            z = to_device(shard.local(generator.sample_latent(b, noise_rng)), device)
            discriminator.requires_grad_(False)
            with updater.autocast():
                out = last["out"] = generator(z)
        with phase("g_step_d_forward_losses"):
            with updater.autocast():
                loss_gan = generator_gan_loss(discriminator(out["images"]).float())
            loss_g = loss_gan
            if use_reg and i % config.reg_every == 0:
                part_masks, layout = out["masks"][:, 1:].float(), out["layout"]
                terms["con"] = concentration_loss(part_masks, layout.centres.float(), config.con_reduce,
                                                  config.generator.coord_grid)
                terms["area"] = area_loss(part_masks, area_targets(config, out))
                loss_g = loss_g + lam_con * terms["con"] + lam_area * terms["area"]
        with phase("g_step_backward_adam"):
            updater.step(loss_g, opt_g, "g")
        discriminator.requires_grad_(True)
        return {"loss_d": loss_d, "loss_g_gan": loss_gan, **terms}

    def samples(tag: str) -> None:
        if ctx.figures_dir is None:
            return
        generator.eval()
        with torch.no_grad():
            out = generator(sample_z.to(device))
        generator.train()
        lay = out["layout"]
        save_sample_grid(ctx.figures_dir / f"ganseg_samples_{tag}.png", out["images"], out["masks"],
                         lay.points, lay.centres, config.n_per)

    def after_step(done: int) -> None:
        if config.sample_every and done % config.sample_every == 0 and done < config.steps:
            samples(f"{done:06d}")

    generator.train(), discriminator.train()
    report = run_steps(snap, config.steps, step, log_every=config.log_every,
                       checkpoint_every=config.checkpoint_every, stats=ctx.stats, progress=ctx.progress,
                       desc="ganseg GAN", on_log=lambda: _mask_stats(last["out"]), after_step=after_step,
                       batch_size=config.batch_size)
    samples("final")
    info = {"gan_steps": report["steps"], "resumed_from_step": report["resumed_from_step"],
            "gan_steps_this_call": report["steps_this_call"], "gan_seconds": report["seconds"],
            "gan_it_s": report["it_s"], "generator_params": sum(p.numel() for p in generator.parameters()),
            "discriminator_params": sum(p.numel() for p in discriminator.parameters()),
            "lambda_con": lam_con, "lambda_area": lam_area, "device": report["device"],
            "world_size": report["world_size"], "gan_images_s": report["images_s"], **updater.describe()}
    return generator.eval(), info
