"""GANSeg discriminator, the released code's architecture (official models/discriminator.py:7-59).

Residual blocks without normalisation: conv3x3 -> LReLU -> conv3x3 -> LReLU -> learned stride-2
conv3x3, plus a stride-2 conv1x1 skip, summed and scaled by 1/sqrt 2. After the last block:
flatten -> Linear(C*h*w, fc_hidden) -> LReLU -> Linear(fc_hidden, 1). At 128 px with the
default widths 3 -> 64 -> 128 -> 256 -> 512 -> 512 -> 512 it has 23,726,721 parameters, as the
official one. ``official.py`` maps the official key names onto these modules.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from segbench.methods.ganseg.config import DiscriminatorConfig
from segbench.methods.ganseg.layers import LEAK, kaiming_init


class DownBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.down = nn.Conv2d(out_channels, out_channels, 3, padding=1, stride=2)
        self.skip = nn.Conv2d(in_channels, out_channels, 1, stride=2)
        self.act = nn.LeakyReLU(LEAK)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.down(self.act(self.conv2(self.act(self.conv1(x)))))
        return (h + self.skip(x)) / math.sqrt(2)


class Discriminator(nn.Module):
    def __init__(self, config: DiscriminatorConfig, image_size: int) -> None:
        super().__init__()
        widths = [3, *config.channels]
        self.blocks = nn.Sequential(*(DownBlock(widths[i], widths[i + 1]) for i in range(len(config.channels))))
        side = image_size
        for _ in config.channels:  # stride 2, padding 1, kernel 3: ceil(side / 2)
            side = (side + 1) // 2
        self.head = nn.Sequential(nn.Linear(widths[-1] * side * side, config.fc_hidden), nn.LeakyReLU(LEAK),
                                  nn.Linear(config.fc_hidden, 1))
        kaiming_init(self)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images [B,3,R,R] in [-1,1] -> logits [B]."""
        return self.head(self.blocks(images).flatten(1))[:, 0]
