"""A DCGAN (Radford et al., 2016) generator/discriminator pair and its training loop.

Two uses: the architecture of the pretrained 64 px face generator shipped in the PyPI package
``gan-face-generate`` (its state dict has exactly this layout: ``main.0`` ... ``main.12``), and
the small unconditional GAN the latent-direction method trains itself on the protocol's fit
images when no pretrained generator is given. The paper's generators were all trained without
labels on other data; this one sees the fit split (images only), which the run record states.

Training follows the DCGAN recipe (non-saturating loss, Adam 2e-4, beta1 0.5) and resumes
bit-identically on CPU from ``gan_training.pt`` (model, optimisers, step, RNG states).
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from segbench.benchmark.errors import UserError
from segbench.benchmark.records import StatsLog
from segbench.methods.common.checkpoint import save_atomic

GAN_CHECKPOINT_NAME = "gan_training.pt"
GAN_CHECKPOINT_FORMAT = 1


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


def load_fit_images(train_images: Any, image_size: int) -> torch.Tensor:
    """All fit images as uint8 ``[N, 3, S, S]`` (antialiased resize); uint8 keeps 2,000 images small."""
    if len(train_images) == 0:
        raise UserError("the GAN needs at least one fit image")
    out = torch.empty(len(train_images), 3, image_size, image_size, dtype=torch.uint8)
    for i in range(len(train_images)):
        x = train_images[i][None]
        if x.shape[-2:] != (image_size, image_size):
            x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False,
                              antialias=True)
        out[i] = (x[0].clamp(0, 1) * 255).round().to(torch.uint8)
    return out


def train_dcgan(cfg: Any, train_images: Any, *, seed: int, checkpoint_dir: Path | None,
                stats: StatsLog | None = None, progress: bool = True) -> tuple[DCGANGenerator, dict[str, Any]]:
    """Train a DCGAN on ``train_images`` with the settings of ``cfg`` (a ``GeneratorConfig``).

    Returns the generator in eval mode and a description of what it saw. Resumes from
    ``checkpoint_dir / gan_training.pt`` when present; ``phase="gan"`` rows go to ``stats``.
    """
    from tqdm import tqdm

    if cfg.train_batch_size < 2:
        raise UserError(f"generator.train_batch_size must be >= 2 (BatchNorm), got {cfg.train_batch_size}")
    path = Path(checkpoint_dir) / GAN_CHECKPOINT_NAME if checkpoint_dir is not None else None
    state = torch.load(path, map_location="cpu", weights_only=True) if path is not None and path.is_file() else None
    settings = {"z_dim": cfg.z_dim, "g_width": cfg.g_width, "d_width": cfg.d_width,
                "image_size": cfg.train_image_size, "batch_size": cfg.train_batch_size, "lr": cfg.train_lr,
                "betas": list(cfg.train_betas), "seed": seed, "n_images": len(train_images)}
    if state is not None:
        changed = [k for k, v in settings.items() if state["settings"].get(k) != v]
        if state.get("format") != GAN_CHECKPOINT_FORMAT or changed:
            raise UserError(f"{path} was written by a different GAN run (changed: {', '.join(changed) or 'format'}); "
                            "delete it or restore those settings")
    data = load_fit_images(train_images, cfg.train_image_size)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        G = DCGANGenerator(cfg.z_dim, cfg.g_width, cfg.train_image_size)
        D = DCGANDiscriminator(cfg.d_width, cfg.train_image_size)
        dcgan_init_(G)
        dcgan_init_(D)
        opt_g = torch.optim.Adam(G.parameters(), lr=cfg.train_lr, betas=tuple(cfg.train_betas))
        opt_d = torch.optim.Adam(D.parameters(), lr=cfg.train_lr, betas=tuple(cfg.train_betas))
        rng = torch.Generator().manual_seed(seed + 104729)  # data order and codes, apart from init
        step = 0
        if state is not None:
            G.load_state_dict(state["G"])
            D.load_state_dict(state["D"])
            opt_g.load_state_dict(state["opt_g"])
            opt_d.load_state_dict(state["opt_d"])
            rng.set_state(state["rng"])
            torch.set_rng_state(state["torch_rng"])
            step = int(state["step"])

        def save() -> None:
            if path is not None:
                save_atomic(path, {"format": GAN_CHECKPOINT_FORMAT, "settings": settings, "step": step,
                                    "G": G.state_dict(), "D": D.state_dict(), "opt_g": opt_g.state_dict(),
                                    "opt_d": opt_d.state_dict(), "rng": rng.get_state(),
                                    "torch_rng": torch.get_rng_state()})

        G.train()
        D.train()
        bs = cfg.train_batch_size
        t0, window_t0, window_steps = time.perf_counter(), time.perf_counter(), 0
        bar = tqdm(total=cfg.train_steps, initial=step, desc="GAN (DCGAN)", disable=not progress, dynamic_ncols=True)
        while step < cfg.train_steps:
            idx = torch.randint(0, len(data), (bs,), generator=rng)
            real = data[idx].float() / 127.5 - 1
            z = torch.randn(bs, cfg.z_dim, generator=rng)
            fake = G(z)
            # Discriminator: real -> 1, fake -> 0.
            d_loss = (F.binary_cross_entropy_with_logits(D(real), torch.ones(bs))
                      + F.binary_cross_entropy_with_logits(D(fake.detach()), torch.zeros(bs)))
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
            # Generator: non-saturating loss, fakes -> 1.
            g_loss = F.binary_cross_entropy_with_logits(D(fake), torch.ones(bs))
            opt_g.zero_grad(set_to_none=True)
            g_loss.backward()
            opt_g.step()
            step += 1
            window_steps += 1
            bar.update(1)
            if step % cfg.log_every == 0 or step == cfg.train_steps:
                g, d = g_loss.item(), d_loss.item()
                if not (math.isfinite(g) and math.isfinite(d)):
                    raise FloatingPointError(f"GAN loss is not finite at step {step}: g={g}, d={d}")
                elapsed = time.perf_counter() - window_t0
                if stats is not None:
                    stats.write(phase="gan", step=step, g_loss=g, d_loss=d, it_s=window_steps / elapsed)
                bar.set_postfix(g=f"{g:.3f}", d=f"{d:.3f}")
                window_t0, window_steps = time.perf_counter(), 0
            if (cfg.checkpoint_every and step % cfg.checkpoint_every == 0) or step == cfg.train_steps:
                save()
        bar.close()
    G.eval().requires_grad_(False)
    info = {**settings, "steps": step, "train_seconds": round(time.perf_counter() - t0, 3)}
    return G, info
