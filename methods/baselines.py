"""Reference baselines: the floor every method must beat, and a pipeline exerciser."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch

from segbench.benchmark.config import MAX_PARTS, domain
from segbench.methods.base import PARTS, SAMPLES, Method
from segbench.methods.context import FitContext


@dataclass(frozen=True)
class CentrePriorConfig:
    num_parts: int = domain(8, ge=1, le=MAX_PARTS)
    # Foreground disc radius as a fraction of the image side; parts sit on a ring inside it.
    radius_frac: float = domain(0.3, gt=0)
    ring_frac: float = domain(0.5, ge=0, le=1)  # ring radius as a fraction of the disc radius
    edge_softness_frac: float = domain(0.03, gt=0)  # logistic edge width of the disc, fraction of the side


class CentrePrior(Method):
    """Image-independent layout: a disc around the image centre split into K angular parts.

    Every image gets the same prediction, so landmark regression can only learn the mean
    shape: this is the "mean shape" floor of the keypoint protocols and the centre-bias
    floor of the foreground protocols. It has nothing to learn.
    """

    Config = CentrePriorConfig
    PRESETS = {"paper": {}, "quick": {}, "smoke": {}}
    produces = frozenset({PARTS})
    deterministic = True  # no randomness: every seed gives the same layout

    def fit(self, train_images, ctx: FitContext) -> None:
        pass  # image-independent by construction

    def _predict(self, images: torch.Tensor) -> torch.Tensor:
        b, _, h, w = images.shape
        return self.layout(h, w).expand(b, -1, -1, -1).clone()

    def layout(self, h: int, w: int) -> torch.Tensor:
        cfg = self.config
        side = float(min(h, w))
        ys = torch.arange(h, dtype=torch.float32).view(h, 1) - (h - 1) / 2
        xs = torch.arange(w, dtype=torch.float32).view(1, w) - (w - 1) / 2
        radius = cfg.radius_frac * side
        fg = torch.sigmoid((radius - torch.sqrt(xs**2 + ys**2)) / (cfg.edge_softness_frac * side))
        angles = torch.arange(cfg.num_parts, dtype=torch.float32) * (2 * torch.pi / cfg.num_parts)
        ring = cfg.ring_frac * radius
        cx, cy = ring * torch.cos(angles), ring * torch.sin(angles)
        d2 = (xs[None] - cx[:, None, None]) ** 2 + (ys[None] - cy[:, None, None]) ** 2
        share = torch.softmax(-d2 / (2 * (0.5 * radius) ** 2), dim=0)
        return torch.cat([(1 - fg)[None], fg[None] * share], dim=0)[None]


@dataclass(frozen=True)
class DummyConfig:
    num_parts: int = domain(4, ge=1, le=MAX_PARTS)
    logit_scale: float = domain(3.0, ge=0)


class Dummy(Method):
    """Random part probabilities and noise samples; deterministic per (seed, image content), one
    image at a time, so that save/load round trips give identical predictions and a batch gets
    what its images get one by one."""

    Config = DummyConfig
    PRESETS = {"paper": {}, "quick": {}, "smoke": {}}
    produces = frozenset({PARTS, SAMPLES})

    def __init__(self, config=None) -> None:
        super().__init__(config)
        self.seed = torch.zeros((), dtype=torch.int64)
        self.image_size = torch.tensor([64, 64])  # of the samples; set from the fit images

    def fit(self, train_images, ctx: FitContext) -> None:
        self.seed = torch.tensor(ctx.seed, dtype=torch.int64)
        self.image_size = torch.tensor(train_images[0].shape[1:])

    def _generator(self, image: torch.Tensor) -> torch.Generator:
        digest = hashlib.sha1(image.detach().cpu().contiguous().numpy().tobytes()).digest()
        return torch.Generator().manual_seed(int(self.seed) * 7919 + int.from_bytes(digest[:6], "little"))

    def _predict(self, images: torch.Tensor) -> torch.Tensor:
        _, _, h, w = images.shape
        size = (self.num_parts + 1, max(h // 8, 1), max(w // 8, 1))
        logits = torch.stack([torch.randn(size, generator=self._generator(image)) for image in images])
        logits = torch.nn.functional.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)
        return torch.softmax(self.config.logit_scale * logits, dim=1).to(images.device)

    def _sample(self, n: int, seed: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(int(self.seed) * 7919 + seed)
        h, w = (int(v) for v in self.image_size)
        return torch.randint(0, 256, (n, 3, h, w), generator=g, dtype=torch.uint8)

    def state_dict(self) -> dict:
        return {"seed": self.seed, "image_size": self.image_size}

    def load_state_dict(self, state: dict) -> None:
        self.seed, self.image_size = state["seed"], state["image_size"]
