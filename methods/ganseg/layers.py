"""GANSeg building blocks: margin grids, part statistics (eq. 1), heatmaps (eq. 4), relative
positional encoding (eq. 5), SPADE ResBlocks (supplement §B.2), AdaIN ConvBlocks (§B.3).

Coordinates: a point is (x, y) in [-1, 1]^2, x = column, y = row (the official code stores
(row, col); ``official.py`` swaps). Two pixel grids (``GeneratorConfig.coord_grid``):
- ``corners`` (the code, heatmaps.py:7-21): pixel j of r at -1 + 2j/(r-1), so the first and last
  pixels sit on -1 and 1; an m-pixel margin extends the same pitch 2/(r-1) m pixels further.
- ``pixel_centres``: pixel j at (2j + 1)/r - 1, pitch 2/r; the margin grid spans
  [-1 - 2m/r, 1 + 2m/r] (eq. 12). This one is consistent with the align_corners=False 2x
  upsampling between stages; the code's grid is off by up to half a pixel after each upsample.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

LEAK = 0.2  # LeakyReLU slope everywhere, and the kaiming init's `a` (generator.py, discriminator.py)


GRIDS = ("corners", "pixel_centres")


def grid_coordinates(resolution: int, margin: int, grid: str = "corners",
                     dtype: torch.dtype | None = None) -> torch.Tensor:
    """1-D pixel coordinates of a margin grid: ``resolution + 2 * margin`` values.

    ``corners`` is computed as the code does (linspace over the extended range) so that it
    agrees with the official grid to the last bit in float64."""
    dtype = dtype or torch.get_default_dtype()
    if grid == "corners":
        pitch = torch.linspace(-1, 1, resolution, dtype=dtype)[1] + 1  # as heatmaps.py:14 computes it
        end = 1 + pitch * margin
        return torch.linspace(-float(end), float(end), resolution + 2 * margin, dtype=dtype)
    if grid == "pixel_centres":
        j = torch.arange(resolution + 2 * margin, dtype=dtype) - margin
        return (2 * j + 1) / resolution - 1
    raise ValueError(f"unknown coordinate grid {grid!r}; choose one of {GRIDS}")


def margin_grid(resolution: int, margin: int, grid: str = "corners",
                dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(xs [1, W], ys [H, 1]) coordinates of the margin grid, broadcastable to [H, W]."""
    c = grid_coordinates(resolution, margin, grid, dtype)
    return c.view(1, -1), c.view(-1, 1)


def crop_margin(x: torch.Tensor, margin: int) -> torch.Tensor:
    return x[..., margin:x.shape[-2] - margin, margin:x.shape[-1] - margin] if margin else x


def conv_cropped(conv: nn.Conv2d, x: torch.Tensor, crop: int) -> torch.Tensor:
    """``crop_margin(conv(x), crop)`` for a stride-1 'same'-size conv, computed only on the kept
    pixels (crop >= the conv's padding, so no output pixel there reads the zero padding)."""
    if not crop:
        return conv(x)
    x = crop_margin(x, crop - conv.padding[0])
    return F.conv2d(x, conv.weight, conv.bias, conv.stride, 0, conv.dilation, conv.groups)


def upsample_and_crop(x: torch.Tensor, margin: int) -> torch.Tensor:
    """2x bilinear upsample (margin doubles to 2m) then crop back to an m-pixel margin (§3.3).

    With align_corners=False the upsampled pixel centres fall exactly on the finer grid."""
    return crop_margin(F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False), margin)


# ----------------------------------------------------------------------------- level 1 / 2 maths

def part_statistics(points: torch.Tensor, n_per: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 1: points [B, K*n_per, 2] (grouped per part) -> centres [B, K, 2], sigma [B, K].

    x_k = mean of the part's n_per points; sigma_k = sqrt(sum_i ||x_k^i - x_k||^2) / (n_per - 1).
    """
    b, n, _ = points.shape
    grouped = points.view(b, n // n_per, n_per, 2)
    centres = grouped.mean(dim=2)
    sq = ((grouped - centres[:, :, None]) ** 2).sum(dim=(2, 3))
    return centres, torch.sqrt(sq + 1e-12) / (n_per - 1)


def linear_tau(points: torch.Tensor, n_per: int) -> torch.Tensor:
    """Width of the code's linear heatmap: mean absolute coordinate offset of the part's points
    from their centre (mean over points and both axes), [B, K]."""
    b, n, _ = points.shape
    grouped = points.view(b, n // n_per, n_per, 2)
    return (grouped - grouped.mean(dim=2, keepdim=True)).abs().mean(dim=(2, 3))


def heatmaps(centres: torch.Tensor, width: torch.Tensor, resolution: int, margin: int,
             kind: str = "linear", grid: str = "corners") -> torch.Tensor:
    """Per-part heatmaps [B, K, H, W] on the margin grid.

    gaussian (eq. 4): exp(-||p - x_k||^2 / sigma_k^2) (sigma^2, not 2 sigma^2: sharper maps);
    linear (code, heatmaps.py:66-77): clamp(1 - ||p - x_k|| / (tau_k + 1e-6), 0), the norm
    without an epsilon (vector_norm has a zero subgradient at 0, so no NaN there).
    """
    xs, ys = margin_grid(resolution, margin, grid, centres.dtype)
    xs, ys = xs.to(centres.device), ys.to(centres.device)
    dx = xs - centres[..., 0, None, None]
    dy = ys - centres[..., 1, None, None]
    w = width[..., None, None]
    if kind == "gaussian":
        return torch.exp(-(dx ** 2 + dy ** 2) / (w ** 2 + 1e-8))
    if kind == "linear":
        dist = torch.linalg.vector_norm(torch.stack(torch.broadcast_tensors(dx, dy), dim=-1), dim=-1)
        return torch.clamp(1 - dist / (w + 1e-6), min=0)
    raise ValueError(f"unknown heatmap kind {kind!r}")


def embed_maps(weights: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
    """sum_k weights_k(p) w_k: weights [B, K, H, W], embeddings [B, K, D] -> [B, D, H, W]."""
    return torch.einsum("bkhw,bkd->bdhw", weights, embeddings)


class FactoredStyle:
    """The style map sum_k weights_k(p) w_k (``embed_maps``) kept as its two factors.

    A convolution is linear, so convolving the D-channel map equals convolving the K weight
    maps with a per-image kernel whose k-th input channel is the conv weight applied to w_k:
    conv(sum_k W_k w_k; A) = sum_k conv(W_k; A w_k). Same function (up to float rounding order),
    K/D of the multiply-adds (8/64 at the paper's sizes) in forward and backward. The K maps are
    unfolded once per (kernel size, crop) and shared by every SPADE layer that reads this style."""

    def __init__(self, weights: torch.Tensor, embeddings: torch.Tensor) -> None:
        self.weights, self.embeddings = weights, embeddings  # [B, K, H, W], [B, K, D]
        self._columns: dict[tuple[int, int], torch.Tensor] = {}

    def conv(self, conv: nn.Conv2d, crop: int = 0) -> torch.Tensor:
        """``crop_margin(conv(embed_maps(weights, embeddings)), crop)`` for a stride-1, zero-padded, 'same'-size
        square conv (crop >= its padding: then only the kept pixels are computed)."""
        k, p = conv.kernel_size[0], conv.padding[0]
        b, n = self.weights.shape[:2]
        key = (k, crop)
        if key not in self._columns:  # [B, K*k*k, H'*W'], channel-major like the kernel below
            weights = crop_margin(self.weights, crop - p) if crop else self.weights
            self._columns[key] = F.unfold(weights, k, padding=0 if crop else p)
        h, w = (s - 2 * crop for s in self.weights.shape[2:])
        kernel = torch.einsum("odij,bkd->bokij", conv.weight, self.embeddings)
        out = torch.bmm(kernel.reshape(b, conv.out_channels, n * k * k), self._columns[key])
        if conv.bias is not None:
            out = out + conv.bias[:, None]
        return out.view(b, conv.out_channels, h, w)


def style_conv(conv: nn.Conv2d, style: "torch.Tensor | FactoredStyle", crop: int = 0) -> torch.Tensor:
    """``crop_margin(conv(style), crop)``, computed only on the kept pixels when crop > 0."""
    return style.conv(conv, crop) if isinstance(style, FactoredStyle) else conv_cropped(conv, style, crop)


class RelativePositionalEncoding(nn.Module):
    """Eq. 5: [sin(pi FC(d)), cos(pi FC(d))] with d = [p - x_1, ..., p - x_N] at every pixel p.

    Only differences p - x_n enter, so the encoding moves with the points (translation
    equivariance); absolute coordinates never do. FC is linear, so
    FC(d)(p) = (sum_n A_n) p - sum_n A_n x_n + b with A_n the 2-column block of point n: the
    [B, 2N, H, W] difference tensor never has to be built.
    """

    def __init__(self, num_points: int, out_channels: int, grid: str = "corners") -> None:
        super().__init__()
        if out_channels % 2:
            raise ValueError("out_channels must be even (sin and cos halves)")
        self.num_points, self.grid = num_points, grid
        self.fc = nn.Linear(2 * num_points, out_channels // 2)

    def forward(self, points: torch.Tensor, resolution: int, margin: int) -> torch.Tensor:
        """points [B, N, 2] -> [B, out_channels, H, W] on the margin grid."""
        weight = self.fc.weight.view(-1, self.num_points, 2)  # [C, N, (x, y)]
        slope = weight.sum(dim=1)  # [C, 2]: how FC(d) changes with p
        offset = self.fc.bias - torch.einsum("cnt,bnt->bc", weight, points)  # [B, C]
        xs, ys = margin_grid(resolution, margin, self.grid, points.dtype)
        xs, ys = xs.to(points.device), ys.to(points.device)
        phase = (slope[:, 0, None, None] * xs + slope[:, 1, None, None] * ys)[None] + offset[..., None, None]
        phase = math.pi * phase
        return torch.cat([torch.sin(phase), torch.cos(phase)], dim=1)

    def reference(self, points: torch.Tensor, resolution: int, margin: int) -> torch.Tensor:
        """The literal eq. 5 (builds the difference tensor); for tests."""
        xs, ys = margin_grid(resolution, margin, self.grid, points.dtype)
        h = w = xs.shape[-1]
        p = torch.stack(torch.broadcast_tensors(xs, ys), dim=-1).to(points)  # [H, W, 2]
        d = p[None, :, :, None, :] - points[:, None, None]  # [B, H, W, N, 2]
        phase = math.pi * self.fc(d.reshape(points.shape[0], h, w, -1))
        return torch.cat([torch.sin(phase), torch.cos(phase)], dim=-1).permute(0, 3, 1, 2)


# ----------------------------------------------------------------------------- modules

def mlp(in_dim: int, hidden: int, out_dim: int, layers: int) -> nn.Sequential:
    """``layers`` linear layers with LeakyReLU between them; every layer its own module."""
    mods: list[nn.Module] = []
    dim = in_dim
    for _ in range(layers - 1):
        mods += [nn.Linear(dim, hidden), nn.LeakyReLU(LEAK)]
        dim = hidden
    mods.append(nn.Linear(dim, out_dim))
    return nn.Sequential(*mods)


class SPADE(nn.Module):
    """Supplement §B.2: BatchNorm (no affine) of x, then per-pixel (1 + gamma) x_hat + beta with
    gamma, beta from the style map through a shared 3x3 conv + LeakyReLU and one 3x3 conv each."""

    def __init__(self, channels: int, style_channels: int, hidden: int, kernel: int = 3) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(channels, affine=False)
        self.shared = nn.Conv2d(style_channels, hidden, kernel, padding=kernel // 2)
        self.gamma = nn.Conv2d(hidden, channels, kernel, padding=kernel // 2)
        self.beta = nn.Conv2d(hidden, channels, kernel, padding=kernel // 2)

    def forward(self, x: torch.Tensor, style: "torch.Tensor | FactoredStyle", crop: int = 0) -> torch.Tensor:
        """crop > 0: only the centre (``crop`` pixels off each side) is computed and returned; the
        BatchNorm statistics still come from all of x. Needs crop >= 2 * (kernel // 2)."""
        inner = crop - self.gamma.padding[0] if crop else 0  # what gamma/beta read: their halo more
        h = F.leaky_relu(style_conv(self.shared, style, inner), LEAK)
        gamma, beta = conv_cropped(self.gamma, h, crop - inner), conv_cropped(self.beta, h, crop - inner)
        return (1 + gamma) * crop_margin(self.norm(x), crop) + beta


class SPADEResBlock(nn.Module):
    """SPADE -> LReLU -> conv3x3 -> SPADE -> LReLU -> conv3x3, plus a shortcut (SPADE + conv
    when the width changes, identity otherwise)."""

    def __init__(self, in_channels: int, out_channels: int, style_channels: int, hidden: int,
                 kernel: int = 3) -> None:
        super().__init__()
        mid = min(in_channels, out_channels)
        self.spade1 = SPADE(in_channels, style_channels, hidden, kernel)
        self.conv1 = nn.Conv2d(in_channels, mid, 3, padding=1)
        self.spade2 = SPADE(mid, style_channels, hidden, kernel)
        self.conv2 = nn.Conv2d(mid, out_channels, 3, padding=1)
        self.learned_shortcut = in_channels != out_channels
        if self.learned_shortcut:
            self.spade_s = SPADE(in_channels, style_channels, hidden, kernel)
            self.conv_s = nn.Conv2d(in_channels, out_channels, 3, padding=1)

    @property
    def min_crop(self) -> int:
        """The smallest ``crop`` that forward computes on the centre only: conv2's halo plus
        the halos of SPADE's two style convs."""
        return 1 + 2 * (self.spade2.shared.kernel_size[0] // 2)

    def forward(self, x: torch.Tensor, style: "torch.Tensor | FactoredStyle", crop: int = 0) -> torch.Tensor:
        """crop >= min_crop: the output without its ``crop``-pixel border, computed only there
        (a branch's last block: the generator keeps only the image area)."""
        h = self.conv1(F.leaky_relu(self.spade1(x, style), LEAK))  # all of it: spade2's statistics
        inner = crop - 1 if crop else 0  # what conv2 / conv_s read: their 1-pixel halo more
        h = conv_cropped(self.conv2, F.leaky_relu(self.spade2(h, style, inner), LEAK), crop - inner)
        if self.learned_shortcut:
            return h + conv_cropped(self.conv_s, self.spade_s(x, style, inner), crop - inner)
        return h + crop_margin(x, crop)


class AdaIN(nn.Module):
    """Supplement §B.3: BatchNorm (no affine) of x, then per-channel (1 + gamma) x_hat + beta with
    gamma, beta from the style vector through FC + LeakyReLU and one FC each."""

    def __init__(self, channels: int, style_dim: int, hidden: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(channels, affine=False)
        self.shared = nn.Linear(style_dim, hidden)
        self.gamma = nn.Linear(hidden, channels)
        self.beta = nn.Linear(hidden, channels)

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        h = F.leaky_relu(self.shared(style), LEAK)
        return (1 + self.gamma(h))[..., None, None] * self.norm(x) + self.beta(h)[..., None, None]


class AdaINConvBlock(nn.Module):
    """AdaIN -> LReLU -> conv3x3."""

    def __init__(self, in_channels: int, out_channels: int, style_dim: int, hidden: int) -> None:
        super().__init__()
        self.adain = AdaIN(in_channels, style_dim, hidden)
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)

    min_crop = 1  # conv's halo

    def forward(self, x: torch.Tensor, style: torch.Tensor, crop: int = 0) -> torch.Tensor:
        """crop >= 1: the output without its ``crop``-pixel border, computed only there."""
        return conv_cropped(self.conv, F.leaky_relu(self.adain(x, style), LEAK), crop)


def kaiming_init(module: nn.Module) -> None:
    """kaiming-normal (a = 0.2) weights and zero biases for every conv and linear layer."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, a=LEAK)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
