"""A DCGAN (Radford et al., 2016) generator/discriminator pair and its training loop.

Two uses: the architecture of the pretrained 64 px face generator shipped in the PyPI package
``gan-face-generate`` (its state dict has exactly this layout: ``main.0`` ... ``main.12``), and
the small unconditional GAN the latent-direction method trains itself on the protocol's fit
images when no pretrained generator is given. The paper's generators were all trained without
labels on other data; this one sees the fit split (images only), which the run record states.

Training follows the DCGAN recipe (non-saturating loss, Adam 2e-4, beta1 0.5) on the loop core
(``methods.common.loop``): resumable training stage ``dcgan``, bit-identical on CPU. Per step every
rank draws the global batch's real-image indices and latents from the loop's generator (in that
order) and keeps its slice (``methods.common.parallel``); the networks run under the method's
``amp`` autocast, the losses on float32 logits, and ``precision.Updater`` steps D, then G
(gradients averaged over the ranks; BatchNorm statistics per rank, as DDP's default, and rank 0's
generator, running statistics included, is every rank's after training).
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from segbench.benchmark.errors import UserError
from segbench.methods.common.images import ImageStore
from segbench.methods.common.loop import Snapshot, run_steps
from segbench.methods.common.parallel import broadcast_modules, world
from segbench.methods.common.precision import Updater
from segbench.methods.context import FitContext, to_device

DCGAN_STAGE = "dcgan"


def _num_upsamplings(image_size: int) -> int:
    n = int(round(math.log2(image_size))) - 2
    if image_size < 8 or 4 * 2 ** n != image_size:
        raise UserError(f"DCGAN image size must be a power of two >= 8, got {image_size}")
    return n


class DCGANGenerator(nn.Module):
    """z ``[n, z_dim]`` -> images ``[n, 3, S, S]`` in [-1, 1].

    A 4x4 transposed conv from the code, then stride-2 transposed convs that halve the width
    and double the side until ``S``; BatchNorm + ReLU between, tanh at the end. With
    ``width=64, image_size=64`` the widths are 512-256-128-64-3 (the DCGAN face model).
    """

    def __init__(self, z_dim: int = 100, width: int = 64, image_size: int = 64) -> None:
        super().__init__()
        n_up = _num_upsamplings(image_size)
        self.z_dim, self.image_size = z_dim, image_size
        channels = width * 2 ** (n_up - 1)
        layers: list[nn.Module] = [nn.ConvTranspose2d(z_dim, channels, 4, 1, 0, bias=False),
                                   nn.BatchNorm2d(channels), nn.ReLU(True)]
        for _ in range(n_up - 1):
            layers += [nn.ConvTranspose2d(channels, channels // 2, 4, 2, 1, bias=False),
                       nn.BatchNorm2d(channels // 2), nn.ReLU(True)]
            channels //= 2
        layers += [nn.ConvTranspose2d(channels, 3, 4, 2, 1, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.main(z.reshape(z.shape[0], self.z_dim, 1, 1))


class DCGANDiscriminator(nn.Module):
    """images ``[n, 3, S, S]`` in [-1, 1] -> real/fake logits ``[n]`` (the generator mirrored)."""

    def __init__(self, width: int = 64, image_size: int = 64) -> None:
        super().__init__()
        n_down = _num_upsamplings(image_size)
        layers: list[nn.Module] = [nn.Conv2d(3, width, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, True)]
        channels = width
        for _ in range(n_down - 1):
            layers += [nn.Conv2d(channels, channels * 2, 4, 2, 1, bias=False),
                       nn.BatchNorm2d(channels * 2), nn.LeakyReLU(0.2, True)]
            channels *= 2
        layers.append(nn.Conv2d(channels, 1, 4, 1, 0, bias=False))
        self.main = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x).flatten()


def dcgan_init_(module: nn.Module) -> None:
    """DCGAN initialisation: conv weights N(0, 0.02), BatchNorm weight N(1, 0.02), bias 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, 0.02)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


def train_dcgan(cfg: Any, train_images: Any, ctx: FitContext,
                amp: str = "off") -> tuple[DCGANGenerator, dict[str, Any]]:
    """Train a DCGAN on ``train_images`` with the settings of ``cfg`` (a ``GeneratorConfig``) on
    ``ctx.device`` at precision ``amp`` (``methods.common.precision``); returns the generator
    (eval mode, frozen, on that device, fp32 weights) and what it saw.

    Resumable training stage ``dcgan`` (``ctx.checkpoint_dir("dcgan")``): a finished run is
    loaded, an interrupted one continues bit-identically on CPU; ``phase="dcgan"`` rows go to
    ``ctx.stats``. The global RNG is seeded inside ``fork_rng``, so the caller's is untouched.
    ``train_batch_size`` is the global batch (split over the ranks of a data-parallel run).
    """
    if cfg.train_batch_size < 2:
        raise UserError(f"generator.train_batch_size must be >= 2 (BatchNorm), got {cfg.train_batch_size}")
    shard = world()
    shard.local_size(cfg.train_batch_size, what="generator.train_batch_size")  # must split over the ranks
    store = ImageStore(train_images, cfg.train_image_size, what="the GAN")
    # What a snapshot must agree on; train_lr, train_steps and the intervals stay out (RESUMABLE_FIELDS).
    settings = {"z_dim": cfg.z_dim, "g_width": cfg.g_width, "d_width": cfg.d_width,
                "image_size": cfg.train_image_size, "batch_size": cfg.train_batch_size,
                "betas": list(cfg.train_betas), "seed": ctx.seed, "n_images": len(store),
                **({"amp": amp} if amp != "off" else {})}
    device, bs = ctx.device, cfg.train_batch_size
    updater = Updater(amp, device)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(ctx.seed)
        G = DCGANGenerator(cfg.z_dim, cfg.g_width, cfg.train_image_size)
        D = DCGANDiscriminator(cfg.d_width, cfg.train_image_size)
        dcgan_init_(G)
        dcgan_init_(D)
        G.to(device).train()
        D.to(device).train()
        opt_g = torch.optim.Adam(G.parameters(), lr=cfg.train_lr, betas=tuple(cfg.train_betas))
        opt_d = torch.optim.Adam(D.parameters(), lr=cfg.train_lr, betas=tuple(cfg.train_betas))
        rng = torch.Generator().manual_seed(ctx.seed + 104729)  # data order and codes, apart from init
        snap = Snapshot(DCGAN_STAGE, ctx.checkpoint_dir(DCGAN_STAGE), settings, modules={"G": G, "D": D},
                        optimizers={"G": opt_g, "D": opt_d}, generators={"data": rng}, device=device,
                        lrs={"G": cfg.train_lr, "D": cfg.train_lr}, updater=updater)
        snap.resume(cfg.train_steps)
        local = shard.local_size(bs)
        ones, zeros = torch.ones(local, device=device), torch.zeros(local, device=device)

        def step(_: int) -> dict[str, torch.Tensor]:
            # The global batch's draws (indices, then codes), this rank's slice of them.
            indices = torch.randint(0, len(store), (bs,), generator=rng)
            z = torch.randn(bs, cfg.z_dim, generator=rng)
            indices, z = shard.local(indices, z)
            real = to_device(store.signed(indices), device)
            with updater.autocast():
                fake = G(to_device(z, device))
                d_real, d_fake = D(real).float(), D(fake.detach()).float()
            # Discriminator: real -> 1, fake -> 0.
            d_loss = (F.binary_cross_entropy_with_logits(d_real, ones)
                      + F.binary_cross_entropy_with_logits(d_fake, zeros))
            updater.step(d_loss, opt_d, "D")
            # Generator: non-saturating loss, fakes -> 1.
            with updater.autocast():
                d_gen = D(fake).float()
            g_loss = F.binary_cross_entropy_with_logits(d_gen, ones)
            updater.step(g_loss, opt_g, "G")
            return {"g_loss": g_loss, "d_loss": d_loss}

        report = run_steps(snap, cfg.train_steps, step, log_every=cfg.log_every, checkpoint_every=cfg.checkpoint_every,
                           stats=ctx.stats, progress=ctx.progress, desc="GAN (DCGAN)", batch_size=bs)
    # Several ranks: their BatchNorm running statistics differ (per-rank batches); all continue with
    # rank 0's generator (the one its snapshot holds), so the direction search and the pair stream
    # that follow compute the same images on every rank.
    broadcast_modules([G])
    G.eval().requires_grad_(False)
    # The lr goes with the training report: the direction stages' generator identity leaves that out,
    # so a resume that only lowers train_lr keeps their snapshots.
    return G, {**settings, "steps": report["steps"],
               "training": {**report, "lr": cfg.train_lr, **updater.describe()}}
