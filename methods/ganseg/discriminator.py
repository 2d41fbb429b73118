"""GANSeg discriminator: residual stride-2 blocks without normalisation, then FC to one logit
(REFERENCE §2: six blocks 3 -> 64 -> 128 -> 256 -> 512 -> 512 -> 512 at 128 px)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from methods.ganseg.config import DiscriminatorConfig
from methods.ganseg.layers import LEAK, kaiming_init


class DownBlock(nn.Module):
    """Residual: [LReLU] conv3x3 -> LReLU -> conv3x3 -> avgpool2, plus avgpool2(conv1x1(x))."""

    def __init__(self, in_channels: int, out_channels: int, preactivate: bool) -> None:
        super().__init__()
        self.preactivate = preactivate  # not on the first block, whose input is the image
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.skip = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.leaky_relu(x, LEAK) if self.preactivate else x
        h = self.conv2(F.leaky_relu(self.conv1(h), LEAK))
        return F.avg_pool2d(h, 2) + F.avg_pool2d(self.skip(x), 2)


class Discriminator(nn.Module):
    def __init__(self, config: DiscriminatorConfig, image_size: int) -> None:
        super().__init__()
        widths = [3, *config.channels]
        self.blocks = nn.Sequential(*(DownBlock(widths[i], widths[i + 1], preactivate=i > 0)
                                      for i in range(len(config.channels))))
        side = image_size // 2 ** len(config.channels)
        self.fc = nn.Linear(widths[-1] * side * side, 1)
        kaiming_init(self)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images [B,3,R,R] in [-1,1] -> logits [B]."""
        h = F.leaky_relu(self.blocks(images), LEAK)
        return self.fc(h.flatten(1))[:, 0]
