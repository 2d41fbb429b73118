"""GANSeg losses: non-saturating GAN (eq. 13-14), gradient penalty on real data (eq. 15),
geometric concentration (eq. 16) and area (eq. 17).

Coordinates are the generator's [-1, 1] image units (see ``layers``); masks and heatmaps are
the image-area maps at the output resolution, so the area terms count pixels there. Defaults
are the released code's (generator.py:303-322, train_gan.py:80-87); the paper-text variants are
the named alternatives.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from segbench.methods.ganseg.layers import linear_tau, margin_grid


def generator_gan_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Eq. 13: E log(1 + exp(-D(G(z)))) = softplus(-D)."""
    return F.softplus(-fake_logits).mean()


def discriminator_gan_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Eq. 14: E softplus(D(G(z))) + E softplus(-D(x))."""
    return F.softplus(fake_logits).mean() + F.softplus(-real_logits).mean()


def gradient_penalty(real_logits: torch.Tensor, real_images: torch.Tensor, kind: str = "r1") -> torch.Tensor:
    """Penalty on the gradient of D at real images (eq. 15), per image then averaged; the caller
    multiplies by ``gp_weight`` (10).

    ``centred`` (the released code, train_gan.py:80-87): (||grad_x D(x)|| - 1)^2.
    ``r1`` (Mescheder et al., named by the paper): ||grad_x D(x)||^2.
    ``real_images`` must have requires_grad and ``real_logits`` must come from them.
    """
    (grad,) = torch.autograd.grad(real_logits.sum(), real_images, create_graph=True)
    if kind == "r1":
        return grad.flatten(1).pow(2).sum(dim=1).mean()
    if kind == "centred":
        return (torch.linalg.vector_norm(grad.flatten(1), dim=1) - 1).pow(2).mean()
    raise ValueError(f"unknown gradient penalty {kind!r}")


def _image_grid(size: int, like: torch.Tensor, grid: str) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = margin_grid(size, 0, grid, like.dtype)
    return xs.to(like.device), ys.to(like.device)


def concentration_loss(part_masks: torch.Tensor, centres: torch.Tensor, reduce: str = "mean",
                       grid: str = "corners") -> torch.Tensor:
    """Eq. 16: sum_p M_k(p) / (sum_p' M_k(p') + 1e-6) * ||p - x_k||^2 per part and image.

    part_masks [B, K, R, R] (background excluded), centres [B, K, 2] in [-1,1] units, on the
    pixel grid ``grid`` (the code: linspace(-1, 1, R), generator.py:284-285).
    ``reduce="mean"`` averages over batch and parts (the code); ``"sum"`` sums over parts and
    averages over the batch (eq. 16).
    """
    xs, ys = _image_grid(part_masks.shape[-1], part_masks, grid)
    d2 = (xs - centres[..., 0, None, None]) ** 2 + (ys - centres[..., 1, None, None]) ** 2
    weights = part_masks / (part_masks.sum(dim=(-2, -1), keepdim=True) + 1e-6)
    per_part = (weights * d2).sum(dim=(-2, -1))  # [B, K]
    per_image = per_part.sum(dim=1) if reduce == "sum" else per_part.mean(dim=1)
    return per_image.mean()


def area_target_code(points: torch.Tensor, n_per: int, image_size: int) -> torch.Tensor:
    """The code's target area per part in pixels, pi * (tau * R/2)^2 with tau the mean |point -
    centre| over the part's points and both axes, without the heatmap's 1e-6
    (generator.py:318-322). points [B, K*n_per, 2] -> [B, K]."""
    return math.pi * (linear_tau(points, n_per) * (image_size / 2)) ** 2


def area_loss(part_masks: torch.Tensor, target_areas: torch.Tensor) -> torch.Tensor:
    """Eq. 17: sum_k max(0, target_k - sum_p M_k(p)), averaged over the batch (pixel units).

    ``target_areas`` [B, K]: ``area_target_code`` (the code) or the heatmaps' sums
    ``H.sum((-2, -1))`` (eq. 17's sum_p H_k(p))."""
    gap = target_areas - part_masks.sum(dim=(-2, -1))
    return torch.clamp(gap, min=0).sum(dim=1).mean()
