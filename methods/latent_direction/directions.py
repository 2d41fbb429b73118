"""Step 1 of Melas-Kyriazi et al. (§3.1, Eq. 1): a latent direction that relights the foreground.

A unit direction v is optimised so that shifting a code along it keeps the image's edges
(Sobel consistency term) while brightening the image centre and darkening its border (radial
term, the photographer's bias). The numbers are the released code's (lukemelas/
unsupervised-image-segmentation ``optimization/main.py``, ``config/optimize.yaml``; the paper's
appendix A.1.1 quotes lr 0.05 / lambda 5 / 1000 steps instead):

    r     ~ clip(N(2, 0.5^2), min 0.1)            one per latent element (shape of z)
    d     = v / |v|                               inside the forward pass
    x_i   = G(z_i),  x_i' = G(z_i + r_i * d)
    C     = 4 * (rho - mean(rho)),  rho = radius on a [-1, 1]^2 grid
    loss  = s * 2.0 * mean(gray(x') * C) + 10.0 * MSE(sobel(gray(x')), sobel(gray(x)))

with s = +1 for the light direction v_l (centre brighter) and s = -1 for the dark one v_d.
Adam lr 5e-3, 300 steps of batch 32, v initialised as randn * 0.1 and renormalised to unit
length after every step (``models/latent_shift_model.py:30``). The search runs on the training
loop core (``methods.common.loop``): each direction is a resumable training stage. The generator
passes run under the method's ``amp`` autocast and Eq. 1 on their float32 images
(``methods.common.precision``; ``off`` = fp32, as the paper); ``Updater.step`` steps Adam. In a
data-parallel run every rank computes the same batch (the codes come from the same stream), so
the averaged gradient is the one-process gradient.

Two switches keep this project's earlier reading (audit rows 3 and 6):
``normalise_in_forward=False`` shifts by the raw parameter v (unit only after each step), so the
gradient has a radial part that Adam turns into a change of direction; ``shift_per="code"`` draws
one scalar r per code, as the paper's scalar epsilon (Table 8) reads.
"""
from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Mapping, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from segbench.benchmark.config import domain
from segbench.methods.common.loop import Snapshot, run_steps
from segbench.methods.common.precision import Updater

GRAY_WEIGHTS = (0.2989, 0.5870, 0.1140)  # ITU-R BT.601 luma, as in the reference code
RADIAL_SCALE = 4.0
SOBEL_EPS = 1e-6  # inside the square root of the edge magnitude (finite gradient at flat regions)


@dataclass(frozen=True)
class DirectionConfig:
    steps: int = domain(300, ge=0)
    batch_size: int = domain(32, ge=1)
    lr: float = domain(5e-3, gt=0)
    init_scale: float = domain(0.1, gt=0)  # v0 = randn * 0.1, renormalised after each step
    shift_mean: float = 2.0  # r ~ N(2, 0.5^2), clipped below at 0.1
    shift_std: float = domain(0.5, ge=0)
    shift_min: float = domain(0.1, ge=0)
    # Official optimization/main.py:106-107 (randn_like(z)): an r for every latent element.
    # "code": one r per code (the paper's scalar epsilon; this project before issue 12).
    shift_per: Literal["element", "code"] = "element"
    # Official models/latent_shift_model.py:22: the generator sees v / |v|, so the loss gradient
    # is tangent to the unit sphere. False: it sees v itself (renormalised only after the step).
    normalise_in_forward: bool = True
    radial_weight: float = domain(2.0, ge=0)  # lambda_c of Eq. 1 (sign flipped for the dark direction)
    sobel_weight: float = domain(10.0, ge=0)
    log_every: int = domain(10, ge=1)
    checkpoint_every: int = domain(100, ge=0)  # training snapshot every N steps (0 = only at the end)


# Fields a snapshot may disagree on: they do not change what it means (run length, logging and
# snapshot intervals, and the learning rate, to continue a diverged search with a smaller one).
RESUMABLE_FIELDS = ("steps", "log_every", "checkpoint_every", "lr")


def gray(images: torch.Tensor) -> torch.Tensor:
    """``[B,3,H,W]`` -> ``[B,H,W]``: 0.2989 R + 0.5870 G + 0.1140 B."""
    w = images.new_tensor(GRAY_WEIGHTS).view(1, 3, 1, 1)
    return (images * w).sum(dim=1)


def radial_prior(h: int, w: int) -> torch.Tensor:
    """C = 4 (rho - mean rho) on ``linspace(-1, 1)`` grids: negative in the centre, positive at the border."""
    ys = torch.linspace(-1, 1, h).view(h, 1)
    xs = torch.linspace(-1, 1, w).view(1, w)
    rho = torch.sqrt(xs ** 2 + ys ** 2)
    return RADIAL_SCALE * (rho - rho.mean())


_SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 8  # normalised: |k| sums to 1


def sobel_magnitude(gray_images: torch.Tensor, eps: float = SOBEL_EPS) -> torch.Tensor:
    """Sobel edge magnitude ``sqrt(gx^2 + gy^2 + eps)`` of ``[B,H,W]``, kernels divided by 8,
    replicate padding (the convention of ``kornia.filters.sobel``)."""
    x = F.pad(gray_images[:, None], (1, 1, 1, 1), mode="replicate")
    kernels = torch.stack([_SOBEL_X, _SOBEL_X.t()])[:, None].to(x)
    g = F.conv2d(x, kernels)
    return torch.sqrt(g[:, 0] ** 2 + g[:, 1] ** 2 + eps)


def direction_loss(images: torch.Tensor, shifted: torch.Tensor, sign: float,
                   cfg: DirectionConfig) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Eq. 1 on generator outputs in [-1, 1]: ``sign * radial_weight * radial + sobel_weight * sobel``."""
    g0, g1 = gray(images), gray(shifted)
    radial = (g1 * radial_prior(*g1.shape[-2:]).to(g1)).mean()
    sobel = F.mse_loss(sobel_magnitude(g1), sobel_magnitude(g0))
    loss = sign * cfg.radial_weight * radial + cfg.sobel_weight * sobel
    return loss, {"radial": radial.detach(), "sobel": sobel.detach()}  # tensors: no host sync per step


def sample_shifts(n: int, z_dim: int, cfg: DirectionConfig, rng: torch.Generator) -> torch.Tensor:
    """``r ~ clip(N(shift_mean, shift_std^2), min shift_min)``: ``[n, z_dim]`` (one per latent
    element, ``shift_per="element"``) or ``[n, 1]`` (one per code); broadcasts against ``[n, z_dim]``."""
    if cfg.shift_per not in ("element", "code"):
        raise ValueError(f"shift_per must be 'element' or 'code', got {cfg.shift_per!r}")
    shape = (n, z_dim) if cfg.shift_per == "element" else (n, 1)
    return (cfg.shift_mean + cfg.shift_std * torch.randn(shape, generator=rng)).clamp(min=cfg.shift_min)


def shift_direction(v: torch.Tensor, cfg: DirectionConfig) -> torch.Tensor:
    """The direction the generator is shifted along: v / |v| (official) or v itself."""
    return v / v.norm() if cfg.normalise_in_forward else v


def shift_loss(generator: Any, z: torch.Tensor, r: torch.Tensor, v: torch.Tensor, sign: float,
               cfg: DirectionConfig, updater: Updater | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """Eq. 1 for codes ``z`` shifted by ``r`` along ``v`` (the parameter; see ``shift_direction``);
    the unshifted images carry no gradient, as in the released code. With an ``updater`` the two
    generator passes run under its autocast; Eq. 1 is computed on their images in float32."""
    amp = updater.autocast if updater is not None else contextlib.nullcontext
    with torch.no_grad(), amp():
        images = generator.generate(z)
    with amp():
        shifted = generator.generate(z + r * shift_direction(v, cfg))
    return direction_loss(images.float(), shifted.float(), sign, cfg)


class DirectionParameter(nn.Module):
    """The searched vector v as a module, so a training snapshot keeps it (and refuses NaNs)."""

    def __init__(self, v: torch.Tensor) -> None:
        super().__init__()
        self.v = nn.Parameter(v)


class DirectionResult(NamedTuple):
    v: torch.Tensor  # unit vector [z_dim], on the CPU
    losses: list[float]  # the loss of every step
    report: dict[str, Any]  # run_steps' report (steps_this_call == 0: loaded from a finished snapshot)


def optimise_direction(generator: Any, cfg: DirectionConfig, *, sign: float, seed: int, stage: str = "direction",
                       checkpoint_dir: Path | None = None, settings: Mapping[str, Any] | None = None,
                       device: str | torch.device, stats: Any = None, progress: bool = False,
                       amp: str = "off") -> DirectionResult:
    """Optimise one unit direction for ``generator`` (a GeneratorAdapter) on ``device`` (the run's
    ``ctx.device``, where the adapter's weights are) at precision ``amp``.

    ``sign`` = +1 gives v_l (foreground lighter), -1 gives v_d. Codes, shifts and v0 come from a
    CPU ``torch.Generator`` seeded with ``seed`` (moved to ``device``), and the global RNG is
    seeded with it inside ``fork_rng``, so the result is reproducible. A resumable training
    stage (``methods.common.loop``): with ``checkpoint_dir`` a snapshot ``<stage>.pt`` is written
    every ``cfg.checkpoint_every`` steps and at the end, and a finished one is loaded instead of
    recomputed; ``settings`` is what else it must agree on (the generator's identity). Stats
    rows (``phase=stage``) every ``cfg.log_every`` steps go to ``stats``. ``amp`` joins the
    snapshot's settings unless it is ``off``; the report gets ``amp`` (and fp16's loss scale).
    """
    device = torch.device(device)
    updater = Updater(amp, device)
    keep = {"sign": sign, "seed": seed, "z_dim": generator.z_dim, **(settings or {}),
            **{k: v for k, v in dataclasses.asdict(cfg).items() if k not in RESUMABLE_FIELDS},
            **({"amp": amp} if amp != "off" else {})}
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)  # for generators that draw noise from the global RNG
        rng = torch.Generator().manual_seed(seed)
        direction = DirectionParameter((cfg.init_scale * torch.randn(generator.z_dim, generator=rng)).to(device))
        optimiser = torch.optim.Adam(direction.parameters(), lr=cfg.lr)
        losses: list[Any] = []  # one per step (tensors until read: no host sync per step), kept in the snapshot

        def set_losses(extra: dict[str, Any]) -> None:
            losses[:] = extra["losses"]

        snap = Snapshot(stage, checkpoint_dir, keep, modules={"direction": direction}, optimizers={"adam": optimiser},
                        generators={"codes": rng}, get_extra=lambda: {"losses": [float(x) for x in losses]}, set_extra=set_losses,
                        device=device, lrs={"adam": cfg.lr}, updater=updater)
        snap.resume(cfg.steps)
        v = direction.v

        def step(_: int) -> dict[str, Any]:
            z = generator.sample_z(cfg.batch_size, rng).to(device)
            r = sample_shifts(cfg.batch_size, generator.z_dim, cfg, rng).to(device)
            loss, terms = shift_loss(generator, z, r, v, sign, cfg, updater)
            updater.step(loss, optimiser, "adam")
            with torch.no_grad():
                v.div_(v.norm())  # the search space is the unit sphere (official :30, after_train_iter)
            losses.append(loss.detach())
            return {"loss": losses[-1], **terms}

        report = run_steps(snap, cfg.steps, step, log_every=cfg.log_every, checkpoint_every=cfg.checkpoint_every,
                           stats=stats, progress=progress, desc=stage.replace("_", " "), batch_size=cfg.batch_size)
    return DirectionResult(v.detach().cpu().clone(), [float(x) for x in losses], {**report, **updater.describe()})
