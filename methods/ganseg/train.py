"""GANSeg adversarial training (paper §3.4, supplement §B.4) with exact resume.

One discriminator step and one generator step per iteration (the code's disc_iters = 1);
gradient penalty on every ``gp_every``-th discriminator step; concentration and area losses on
every ``reg_every``-th generator step. All randomness of the loop comes from two
``torch.Generator``s (latents; data order and flips) whose states go into the checkpoint with
the step, both optimisers, both networks and the global torch RNG, so a run continued from a
checkpoint is bit-identical on CPU to one that never stopped.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from segbench.benchmark.errors import UserError
from segbench.benchmark.records import StatsLog
from segbench.methods.common.checkpoint import save_atomic
from segbench.methods.ganseg.config import RESUMABLE_FIELDS, GANSegConfig
from segbench.methods.ganseg.discriminator import Discriminator
from segbench.methods.ganseg.figures import save_sample_grid
from segbench.methods.ganseg.generator import GANSegGenerator
from segbench.methods.ganseg.losses import (area_loss, area_target_code, concentration_loss, discriminator_gan_loss,
                                   generator_gan_loss, gradient_penalty)

CHECKPOINT_NAME = "gan_training.pt"
CHECKPOINT_FORMAT = 1
# Offsets from the run seed for the loop's own generators (model init uses the seed itself).
NOISE_SEED, DATA_SEED, SAMPLE_SEED = 1, 2, 3


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("device=cuda but no CUDA device is available")
    return torch.device("cuda" if name == "cuda" or (name == "auto" and torch.cuda.is_available()) else "cpu")


def build_networks(config: GANSegConfig, seed: int, *,
                   discriminator: bool = True) -> tuple[GANSegGenerator, Discriminator | None]:
    """Generator (and discriminator), initialised from ``seed`` without touching the caller's RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        gen = GANSegGenerator(config.generator, config.num_parts, config.n_per)
        disc = Discriminator(config.discriminator, config.image_size) if discriminator else None
    return gen, disc


class RealImages:
    """The training images at ``image_size`` in [-1, 1]; kept in memory as uint8 when they fit,
    otherwise loaded per batch. Order: epochs of random permutations drawn from ``rng``.

    A fit dataset with per-read augmentation (``base_image`` / ``augment`` / ``base_length``,
    e.g. CUB and Flowers' random resized crops) is cached un-augmented and augmented on every
    read, so each batch sees fresh crops as the code's DataLoader does (datasets.py:217-236);
    caching its items would freeze one crop per item for the whole run."""

    def __init__(self, dataset: torch.utils.data.Dataset, image_size: int, max_mb: int) -> None:
        self.dataset, self.image_size = dataset, image_size
        self.n = len(dataset)
        if self.n == 0:
            raise UserError("GANSeg needs at least one training image")
        self.augment = getattr(dataset, "augment", None)
        self.n_base = int(getattr(dataset, "base_length", self.n)) if self.augment else self.n
        self.cache = None
        if self.n_base * 3 * image_size * image_size <= max_mb * 2**20:
            self.cache = torch.stack([self._load(i) for i in range(self.n_base)])
        self.buffer = torch.zeros(0, dtype=torch.int64)  # indices left of the current epoch

    def _load(self, index: int) -> torch.Tensor:
        """uint8 [3, S, S] of item ``index`` (of the un-augmented image with augmentation)."""
        x = self.dataset.base_image(index % self.n_base) if self.augment else self.dataset[index]
        if x.shape[-2:] != (self.image_size, self.image_size):
            x = F.interpolate(x[None], size=(self.image_size, self.image_size), mode="bilinear",
                              align_corners=False, antialias=True)[0]
        return (x.clamp(0, 1) * 255).round().to(torch.uint8)

    def batch(self, size: int, rng: torch.Generator, hflip: bool) -> torch.Tensor:
        while self.buffer.numel() < size:
            self.buffer = torch.cat([self.buffer, torch.randperm(self.n, generator=rng)])
        idx, self.buffer = self.buffer[:size], self.buffer[size:]
        images = self.cache[idx % self.n_base] if self.cache is not None else \
            torch.stack([self._load(int(i)) for i in idx])
        if self.augment is not None:  # a fresh draw per read (torch's global RNG, saved on resume)
            images = torch.stack([self.augment(im.float() / 255) for im in images]) * 2 - 1
        else:
            images = images.float() / 127.5 - 1
        if hflip:
            flip = torch.rand(size, generator=rng) < 0.5
            images = torch.where(flip[:, None, None, None], images.flip(-1), images)
        return images


def area_targets(config: GANSegConfig, out: dict) -> torch.Tensor:
    """Per-part target areas [B, K] of the area loss (``config.area_target``)."""
    if config.area_target == "code":
        return area_target_code(out["layout"].points, config.n_per, config.image_size)
    return out["heatmaps"].sum(dim=(-2, -1))


def _config_key(config: GANSegConfig) -> dict[str, Any]:
    d = dataclasses.asdict(config)
    return {k: v for k, v in d.items() if k not in RESUMABLE_FIELDS}


def _normalise(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _normalise(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_normalise(v) for v in obj]
    return obj


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


def train_gan(config: GANSegConfig, train_images: torch.utils.data.Dataset, *, workdir: Path, seed: int,
              stats: StatsLog | None = None, progress: bool = True) -> tuple[GANSegGenerator, dict[str, Any]]:
    """Train generator and discriminator; return (generator in eval mode, info)."""
    from tqdm import tqdm

    workdir = Path(workdir)
    path = workdir / "checkpoints" / "training" / CHECKPOINT_NAME
    device = resolve_device(config.device)
    state = torch.load(path, map_location="cpu", weights_only=True) if path.is_file() else None
    if state is not None:
        if state.get("format") != CHECKPOINT_FORMAT:
            raise UserError(f"{path}: unknown GANSeg checkpoint format {state.get('format')!r}; delete it")
        if _normalise(state["config"]) != _normalise(_config_key(config)) or state["seed"] != seed:
            raise UserError(f"{path} was written by a different GANSeg run (config or seed differ); "
                            "delete it or restore those settings")
        if state["step"] > config.steps:
            raise UserError(f"{path} is at step {state['step']}, past the configured {config.steps} steps")
    generator, discriminator = build_networks(config, seed)
    generator.to(device), discriminator.to(device)
    opt_g = torch.optim.Adam(generator.parameters(), lr=config.lr_g, betas=tuple(config.betas))
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=config.lr_d, betas=tuple(config.betas))
    noise_rng = torch.Generator().manual_seed(seed + NOISE_SEED)
    data_rng = torch.Generator().manual_seed(seed + DATA_SEED)
    step = 0
    if state is not None and state["step"] == config.steps:  # finished: only the generator is needed
        generator.load_state_dict(state["generator"])
        return generator.eval(), {"gan_steps": config.steps, "resumed_from_step": config.steps,
                                  "gan_steps_this_call": 0}
    real = RealImages(train_images, config.image_size, config.preload_max_mb)
    if state is not None:
        generator.load_state_dict(state["generator"])
        discriminator.load_state_dict(state["discriminator"])
        opt_g.load_state_dict(state["opt_g"])
        opt_d.load_state_dict(state["opt_d"])
        noise_rng.set_state(state["noise_rng"])
        data_rng.set_state(state["data_rng"])
        real.buffer = state["data_buffer"]
        torch.set_rng_state(state["torch_rng"])
        step = int(state["step"])
    start_step = step
    sample_z = generator.sample_latent(16, torch.Generator().manual_seed(seed + SAMPLE_SEED))
    use_reg = not config.generator.no_points
    lam_con = 0.0 if config.no_concentration or not use_reg else config.lambda_con
    lam_area = 0.0 if config.no_area or not use_reg else config.lambda_area

    def save() -> None:
        save_atomic(path, {"format": CHECKPOINT_FORMAT, "step": step, "seed": seed, "config": _config_key(config),
                      "generator": generator.state_dict(), "discriminator": discriminator.state_dict(),
                      "opt_g": opt_g.state_dict(), "opt_d": opt_d.state_dict(),
                      "noise_rng": noise_rng.get_state(), "data_rng": data_rng.get_state(),
                      "data_buffer": real.buffer, "torch_rng": torch.get_rng_state()})

    def samples(tag: str) -> None:
        generator.eval()
        with torch.no_grad():
            out = generator(sample_z.to(device))
        generator.train()
        lay = out["layout"]
        save_sample_grid(workdir / "figures" / f"ganseg_samples_{tag}.png", out["images"], out["masks"],
                         lay.points, lay.centres, config.n_per)

    generator.train(), discriminator.train()
    t_start = window_t0 = time.perf_counter()
    window: dict[str, float] = {}
    window_steps = 0
    bar = tqdm(total=config.steps, initial=step, desc="ganseg GAN", disable=None if progress else True, dynamic_ncols=True)
    while step < config.steps:
        b = config.batch_size
        # ---- discriminator step (eq. 14-15, 18)
        x_real = real.batch(b, data_rng, config.hflip).to(device)
        z = generator.sample_latent(b, noise_rng).to(device)
        with torch.no_grad():
            x_fake = generator(z)["images"]
        penalise = step % config.gp_every == 0
        x_real.requires_grad_(penalise)
        d_real = discriminator(x_real)
        loss_d = discriminator_gan_loss(d_real, discriminator(x_fake))
        if penalise:
            gp = gradient_penalty(d_real, x_real, config.gp)
            loss_d = loss_d + config.gp_weight * gp
            window["gp"] = gp.item()
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        # ---- generator step (eq. 13, 16-17, 19)
        z = generator.sample_latent(b, noise_rng).to(device)
        discriminator.requires_grad_(False)
        out = generator(z)
        loss_gan = generator_gan_loss(discriminator(out["images"]))
        loss_g = loss_gan
        if use_reg and step % config.reg_every == 0:
            part_masks, layout = out["masks"][:, 1:], out["layout"]
            con = concentration_loss(part_masks, layout.centres, config.con_reduce, config.generator.coord_grid)
            area = area_loss(part_masks, area_targets(config, out))
            loss_g = loss_g + lam_con * con + lam_area * area
            window["con"], window["area"] = con.item(), area.item()
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        discriminator.requires_grad_(True)
        step += 1
        window_steps += 1
        window["loss_d_sum"] = window.get("loss_d_sum", 0.0) + loss_d.item()
        window["loss_g_gan_sum"] = window.get("loss_g_gan_sum", 0.0) + loss_gan.item()
        bar.update(1)
        if step % config.log_every == 0 or step == config.steps:
            elapsed = time.perf_counter() - window_t0
            row = {"phase": "gan", "step": step, "loss_d": window.pop("loss_d_sum") / window_steps,
                   "loss_g_gan": window.pop("loss_g_gan_sum") / window_steps, **window,
                   **_mask_stats(out), "it_s": window_steps / elapsed}
            if not all(v == v and abs(v) != float("inf") for v in row.values() if isinstance(v, float)):
                raise FloatingPointError(f"GANSeg training diverged at step {step}: {row}")
            if stats is not None:
                stats.write(**row)
            bar.set_postfix(d=f"{row['loss_d']:.3f}", g=f"{row['loss_g_gan']:.3f}")
            window, window_steps, window_t0 = {}, 0, time.perf_counter()
        if (config.checkpoint_every and step % config.checkpoint_every == 0) or step == config.steps:
            save()
        if config.sample_every and step % config.sample_every == 0 and step < config.steps:
            samples(f"{step:06d}")
    bar.close()
    seconds = time.perf_counter() - t_start  # training only: the final sample grid is not a step
    samples("final")
    info = {"gan_steps": step, "resumed_from_step": start_step if state is not None else None,
            "gan_steps_this_call": step - start_step, "gan_seconds": round(seconds, 3),
            "gan_it_s": (step - start_step) / seconds if step > start_step else None,
            "generator_params": sum(p.numel() for p in generator.parameters()),
            "discriminator_params": sum(p.numel() for p in discriminator.parameters()),
            "lambda_con": lam_con, "lambda_area": lam_area, "device": str(device)}
    return generator.eval(), info
