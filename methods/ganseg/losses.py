"""GANSeg losses: non-saturating GAN (eq. 13-14), gradient penalty on real data (eq. 15),
geometric concentration (eq. 16) and area (eq. 17).

Coordinates are the generator's [-1, 1] image units (see ``layers``); masks and heatmaps are
the image-area maps at the output resolution, so the area terms count pixels there.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from methods.ganseg.layers import margin_grid


def generator_gan_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Eq. 13: E log(1 + exp(-D(G(z)))) = softplus(-D)."""
    return F.softplus(-fake_logits).mean()


def discriminator_gan_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Eq. 14: E softplus(D(G(z))) + E softplus(-D(x))."""
    return F.softplus(fake_logits).mean() + F.softplus(-real_logits).mean()


def gradient_penalty(real_logits: torch.Tensor, real_images: torch.Tensor, kind: str = "r1") -> torch.Tensor:
    """Penalty on the gradient of D at real images (eq. 15), per image then averaged.

    ``r1`` (Mescheder et al., named by the paper): ||grad_x D(x)||^2.
    ``centred`` (the released code): (||grad_x D(x)|| - 1)^2.
    ``real_images`` must have requires_grad and ``real_logits`` must come from them.
    """
    (grad,) = torch.autograd.grad(real_logits.sum(), real_images, create_graph=True)
    sq = grad.flatten(1).pow(2).sum(dim=1)
    if kind == "r1":
        return sq.mean()
    if kind == "centred":
        return (torch.sqrt(sq + 1e-12) - 1).pow(2).mean()
    raise ValueError(f"unknown gradient penalty {kind!r}")


def _image_grid(size: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = margin_grid(size, 0)
    return xs.to(like), ys.to(like)


def concentration_loss(part_masks: torch.Tensor, centres: torch.Tensor, reduce: str = "sum") -> torch.Tensor:
    """Eq. 16: sum_k sum_p M_k(p) / sum_p' M_k(p') * ||p - x_k||^2, averaged over the batch.

    part_masks [B, K, R, R] (background excluded), centres [B, K, 2] in [-1,1] units.
    ``reduce="sum"`` sums over parts (paper); ``"mean"`` averages over them (released code).
    """
    xs, ys = _image_grid(part_masks.shape[-1], part_masks)
    d2 = (xs - centres[..., 0, None, None]) ** 2 + (ys - centres[..., 1, None, None]) ** 2
    weights = part_masks / (part_masks.sum(dim=(-2, -1), keepdim=True) + 1e-6)
    per_part = (weights * d2).sum(dim=(-2, -1))  # [B, K]
    per_image = per_part.sum(dim=1) if reduce == "sum" else per_part.mean(dim=1)
    return per_image.mean()


def area_loss(part_masks: torch.Tensor, part_heatmaps: torch.Tensor) -> torch.Tensor:
    """Eq. 17: sum_k max(0, sum_p H_k(p) - sum_p M_k(p)), averaged over the batch (pixel units)."""
    gap = part_heatmaps.sum(dim=(-2, -1)) - part_masks.sum(dim=(-2, -1))
    return torch.clamp(gap, min=0).sum(dim=1).mean()
