"""Liu et al.'s geometric and semantic losses (spec §2.3-2.5; paper Eq. 6-11).

``probs`` are the shape encoder's softmax maps ``[B, K+1, h, w]``, channel 0 = background.
Every part channel (and the background) is normalised as in Eq. 9: ``z_k = sum_p P_k + 1e-6``,
``P~_k = P_k / min(z_k, 1)``; a part covering at least one pixel's worth of probability is thus
left as it is. Coordinates are ``linspace(0, 1, side)`` per axis, x along the width.

* :func:`foreground_concentration` — L_fg, Eq. 7 (``reduce="mean"``: the paper's 1/K) or the
  code's sum over the K parts (``reduce="sum"``); both divide by the batch size.
* :func:`background_loss` — L_bg, Eq. 10-11; ``form="code"`` uses the code's distance map
  ``2*min((x+0.01)^2, (x-1.01)^2, (y+0.01)^2, (y-1.01)^2)`` on [0, 1] coordinates,
  ``form="paper"`` the squared pixel distance ``h^2`` to the nearest image border.
* :class:`ArcFace` — L_cls, Eq. 6: additive angular margin softmax over the squeezed part
  features (background skipped as a sample, optionally present as an extra class row).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def _normalise_mass(maps: torch.Tensor) -> torch.Tensor:
    """Eq. 9: P / min(sum_p P + 1e-6, 1) per image and channel; ``maps`` [B, C, h, w]."""
    z = maps.sum(dim=(2, 3), keepdim=True) + 1e-6
    return maps / z.clamp(max=1.0)


def _axes(h: int, w: int, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """x [1, 1, 1, w] and y [1, 1, h, 1] on linspace(0, 1)."""
    x = torch.linspace(0.0, 1.0, w, device=device, dtype=dtype).view(1, 1, 1, w)
    y = torch.linspace(0.0, 1.0, h, device=device, dtype=dtype).view(1, 1, h, 1)
    return x, y


def foreground_concentration(probs: torch.Tensor, reduce: str = "sum") -> torch.Tensor:
    """L_fg of ``probs`` [B, K+1, h, w] (channels 1..K are the parts).

    ``sum_{b,k,p} ||p - mu_k||^2 P~_k(p) / B``, with the centre ``mu_k = sum_p p P~_k / sum_p P~_k``
    (properly normalised, as the code's ``get_gaussian_mean``); ``reduce="mean"`` also divides by
    K (paper Eq. 7).
    """
    if reduce not in ("sum", "mean"):
        raise ValueError(f"reduce must be 'sum' (code) or 'mean' (paper), got {reduce!r}")
    if probs.dim() != 4 or probs.shape[1] < 2:
        raise ValueError(f"expected probabilities [B, K+1, h, w] with K >= 1, got {tuple(probs.shape)}")
    b, c, h, w = probs.shape
    parts = _normalise_mass(probs[:, 1:])  # [B, K, h, w]
    x, y = _axes(h, w, probs.device, probs.dtype)
    mass = parts.sum(dim=(2, 3), keepdim=True).clamp(min=1e-12)
    mu_x = (parts * x).sum(dim=(2, 3), keepdim=True) / mass
    mu_y = (parts * y).sum(dim=(2, 3), keepdim=True) / mass
    dist2 = (x - mu_x) ** 2 + (y - mu_y) ** 2  # [B, K, h, w]
    loss = (dist2 * parts).sum() / b
    if reduce == "mean":
        loss = loss / (c - 1)
    return loss


def border_distance_map(h: int, w: int, form: str = "code") -> torch.Tensor:
    """The weight each background pixel's probability gets in L_bg, ``[h, w]`` float32.

    ``"code"``: ``2*min((x+0.01)^2, (x-1.01)^2, (y+0.01)^2, (y-1.01)^2)`` with x, y on
    ``linspace(0, 1)`` (corner 2e-4, centre of an odd map 2*0.51^2).
    ``"paper"``: ``h(u, v)^2`` with ``h = min(u, W-u, v, H-v)`` in pixels, measured at pixel
    centres ``u = j + 0.5`` so that the map is symmetric: ``h = 0.5`` (weight 0.25) on the outer
    ring of pixels, ``h = W/2`` (weight ``(W/2)^2``) at the centre pixel of an odd square map.
    """
    if form == "code":
        x = torch.linspace(0.0, 1.0, w, dtype=torch.float64).view(1, w)
        y = torch.linspace(0.0, 1.0, h, dtype=torch.float64).view(h, 1)
        dx = torch.minimum((x + 0.01) ** 2, (x - 1.01) ** 2).expand(h, w)
        dy = torch.minimum((y + 0.01) ** 2, (y - 1.01) ** 2).expand(h, w)
        return (2.0 * torch.minimum(dx, dy)).to(torch.float32)
    if form == "paper":
        u = torch.arange(w, dtype=torch.float64).view(1, w) + 0.5
        v = torch.arange(h, dtype=torch.float64).view(h, 1) + 0.5
        du = torch.minimum(u, w - u).expand(h, w)
        dv = torch.minimum(v, h - v).expand(h, w)
        return (torch.minimum(du, dv) ** 2).to(torch.float32)
    raise ValueError(f"form must be 'code' or 'paper', got {form!r}")


def background_loss(probs: torch.Tensor, form: str = "code") -> torch.Tensor:
    """L_bg of ``probs`` [B, K+1, h, w]: ``sum_p d(p) P~_0(p) / B`` with ``P~_0 = P_0 / min(z_0, 1)``
    (Eq. 9-10) and ``d = border_distance_map(h, w, form)``."""
    if probs.dim() != 4:
        raise ValueError(f"expected probabilities [B, K+1, h, w], got {tuple(probs.shape)}")
    b, _, h, w = probs.shape
    bg = _normalise_mass(probs[:, :1])  # [B, 1, h, w]
    dist = border_distance_map(h, w, form).to(device=probs.device, dtype=probs.dtype)
    return (bg * dist).sum() / b


class ArcFace(nn.Module):
    """Additive angular margin classifier (Eq. 6; code ``loss/arcloss.py``), ``easy_margin=False``.

    ``rows = K`` (paper: one class per part) or ``K + 1`` (code: row 0 is the background, never a
    target but an extra negative). ``scale`` 20 is the paper's, 30 the code's; margin 0.5 in both.
    """

    def __init__(self, feat_dim: int, rows: int, scale: float = 20.0, margin: float = 0.5):
        super().__init__()
        if rows < 1 or feat_dim < 1:
            raise ValueError(f"ArcFace needs rows >= 1 and feat_dim >= 1, got rows={rows}, feat_dim={feat_dim}")
        self.feat_dim = int(feat_dim)
        self.rows = int(rows)
        self.scale = float(scale)
        self.margin = float(margin)
        self.weight = nn.Parameter(torch.empty(self.rows, self.feat_dim))
        nn.init.xavier_uniform_(self.weight)
        self._cos_m = math.cos(self.margin)
        self._sin_m = math.sin(self.margin)
        self._th = math.cos(math.pi - self.margin)
        self._mm = math.sin(self.margin) * self.margin  # = sin(pi - m) * m

    def extra_repr(self) -> str:
        return f"feat_dim={self.feat_dim}, rows={self.rows}, scale={self.scale}, margin={self.margin}"

    def cosine(self, feats: torch.Tensor) -> torch.Tensor:
        """cos theta_j = <F/|F|, W_j/|W_j|>, ``[N, rows]``."""
        return F.linear(F.normalize(feats, dim=1), F.normalize(self.weight, dim=1))

    def logits(self, feats: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``scale *`` logits of ``feats`` [N, feat_dim] with the margin applied to ``target`` [N]:
        phi = cos(theta + m) where cos(theta) > cos(pi - m), else cos(theta) - m sin(m)."""
        cos = self.cosine(feats)
        sin = torch.sqrt((1.0 - cos * cos).clamp(min=1e-12, max=1.0))
        phi = cos * self._cos_m - sin * self._sin_m
        phi = torch.where(cos > self._th, phi, cos - self._mm)
        onehot = F.one_hot(target.long(), self.rows).to(cos.dtype)
        return self.scale * (onehot * phi + (1.0 - onehot) * cos)

    def target_of_part(self, num_parts: int) -> torch.Tensor:
        """Class index of parts 1..K: i with K+1 rows (row 0 = background), i-1 with K rows."""
        if self.rows == num_parts + 1:
            return torch.arange(1, num_parts + 1)
        if self.rows == num_parts:
            return torch.arange(num_parts)
        raise ValueError(f"ArcFace has {self.rows} rows but the features have K={num_parts} parts "
                         f"(rows must be K or K+1)")

    def forward(self, part_feats: torch.Tensor, divide_by: int) -> torch.Tensor:
        """L_cls of the squeezed features ``part_feats`` [B, K+1, L] (background first; trailing
        singleton dims allowed): ``sum_{i=1..K} mean_b CE(logits(F[b, i]), class(i)) / divide_by``."""
        if part_feats.dim() < 3:
            raise ValueError(f"expected part features [B, K+1, L], got {tuple(part_feats.shape)}")
        feats = part_feats.flatten(2)
        b, c, length = feats.shape
        if length != self.feat_dim:
            raise ValueError(f"ArcFace feat_dim={self.feat_dim} but features have L={length}")
        k = c - 1
        target = self.target_of_part(k).to(feats.device).repeat(b)  # [B*K], b-major
        flat = feats[:, 1:].reshape(b * k, length)
        ce = F.cross_entropy(self.logits(flat, target), target, reduction="sum") / b
        return ce / divide_by
