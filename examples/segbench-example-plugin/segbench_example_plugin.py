"""An example segbench method plugin: k-means on pixel colours (tiny, but a real unsupervised method)."""
from dataclasses import dataclass

import torch

from segbench.api import PARTS, FitContext, Method


@dataclass(frozen=True)
class ColourClustersConfig:
    num_parts: int = 4  # K colour clusters are parts; one more cluster is the background
    iterations: int = 20  # Lloyd iterations of k-means
    pixels_per_image: int = 512  # random pixels per fit image that k-means sees
    temperature: float = 0.01  # of the soft assignment softmax(-distance^2 / temperature)


class ColourClusters(Method):
    """K+1 colour clusters fitted on the fit images; the cluster that covers most of the image
    borders is the background (channel 0); predictions are soft assignments of each pixel."""

    Config = ColourClustersConfig
    PRESETS = {"paper": {}, "quick": {"iterations": 10}, "smoke": {"iterations": 5, "pixels_per_image": 64}}
    produces = frozenset({PARTS})

    def __init__(self, config=None):
        super().__init__(config)
        self.centres = torch.zeros(self.num_parts + 1, 3)

    def fit(self, train_images, ctx: FitContext) -> None:
        g = torch.Generator().manual_seed(ctx.seed)  # all randomness comes from the run's seed
        images = torch.stack([train_images[i] for i in range(len(train_images))])  # [N, 3, H, W]
        pixels = images.flatten(2).transpose(1, 2)  # [N, H*W, 3]
        picks = torch.randint(0, pixels.shape[1], (len(images), self.config.pixels_per_image), generator=g)
        x = torch.gather(pixels, 1, picks[..., None].expand(-1, -1, 3)).reshape(-1, 3).to(ctx.device)
        centres = x[torch.randperm(len(x), generator=g)[: self.num_parts + 1].to(x.device)]
        for _ in range(self.config.iterations):
            assign = torch.cdist(x, centres).argmin(1)
            for k in range(len(centres)):
                if (assign == k).any():
                    centres[k] = x[assign == k].mean(0)
        border = torch.cat([images[:, :, 0], images[:, :, -1], images[:, :, :, 0], images[:, :, :, -1]], 2)
        background = torch.cdist(border.transpose(1, 2).reshape(-1, 3), centres.cpu()).argmin(1).bincount().argmax()
        order = [int(background)] + [k for k in range(len(centres)) if k != int(background)]
        self.centres = centres.cpu()[order]

    def _predict(self, images: torch.Tensor) -> torch.Tensor:
        d2 = ((images[:, None] - self.centres.to(images.device)[None, :, :, None, None]) ** 2).sum(2)
        return torch.softmax(-d2 / self.config.temperature, dim=1)  # [B, K+1, H, W]

    def state_dict(self) -> dict:
        return {"centres": self.centres}

    def load_state_dict(self, state: dict) -> None:
        self.centres = state["centres"]
