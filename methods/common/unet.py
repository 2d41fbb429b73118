"""The UNet of Melas-Kyriazi et al. (ICLR 2022, appendix A.1.2): a plain encoder-decoder UNet.

Widths w, 2w, 4w, 8w, 8w over five levels (w = 64 in the paper: 64-128-256-512-512), each
level two 3x3 conv -> BatchNorm -> ReLU layers, 2x2 max-pool down, bilinear 2x upsampling
(no transposed convs) up, skip connections by concatenation, and a 1x1 conv to the class
logits. In general the widths are ``w * 2**i`` for every level but the last, which repeats the
one before (the bottleneck of a bilinear UNet keeps the width, so each decoder block halves it).
Fewer levels / a smaller ``w`` give the CPU-sized ``small_unet``.
"""
from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F


def unet_widths(width: int, levels: int) -> list[int]:
    """Channel width per level: ``[w, 2w, 4w, ..., 2**(L-2) w, 2**(L-2) w]`` (5 levels: w,2w,4w,8w,8w)."""
    if levels < 2 or width < 1:
        raise ValueError(f"a UNet needs >= 2 levels and width >= 1, got levels={levels}, width={width}")
    widths = [width * 2 ** i for i in range(levels - 1)]
    return widths + [widths[-1]]


class DoubleConv(nn.Sequential):
    """(3x3 conv -> BatchNorm -> ReLU) x 2; convs have no bias since BatchNorm follows."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class UpBlock(nn.Module):
    """Bilinear upsampling to the skip's size, concatenation with the skip, DoubleConv."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = DoubleConv(in_channels + skip_channels, out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        # Interpolating to the skip's exact size also handles sides not divisible by 2**levels.
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.conv(torch.cat([skip, x], dim=1))


class UNet(nn.Module):
    """UNet mapping ``[B, in_channels, H, W]`` to logits ``[B, num_classes, H, W]``."""

    def __init__(self, num_classes: int, *, width: int = 64, levels: int = 5, in_channels: int = 3) -> None:
        super().__init__()
        widths = unet_widths(width, levels)
        self.widths = widths
        # Each level is its own module instance (ModuleList of fresh blocks): no shared weights.
        self.encoder = nn.ModuleList(
            [DoubleConv(in_channels, widths[0])]
            + [DoubleConv(widths[i - 1], widths[i]) for i in range(1, levels)])
        decoder = []
        deeper = widths[-1]
        for i in range(levels - 2, -1, -1):  # from the level above the bottleneck up to level 0
            out = widths[i - 1] if i > 0 else widths[0]
            decoder.append(UpBlock(deeper, widths[i], out))
            deeper = out
        self.decoder = nn.ModuleList(decoder)
        self.head = nn.Conv2d(widths[0], num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, block in enumerate(self.encoder):
            x = block(x if i == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        x = skips.pop()
        for block in self.decoder:
            x = block(x, skips.pop())
        return self.head(x)
