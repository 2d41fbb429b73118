"""Step 2 of Melas-Kyriazi et al. (§3.2, Eqs. 2-3, §3.2.1): masks from the found directions,
refinement filters, and the stream of (image, mask) pairs the segmenter trains on.

Mask rules, with eps = 5 (REFERENCE §3), foreground where the difference is positive:

- ``both`` (Eq. 2):        gray(G(z + eps v_l)) - gray(G(z + eps v_d)) > 0
- ``single`` (Eq. 3):      gray(G(z + eps v_l)) - gray(G(z)) > 0
- ``single_dark`` (Eq. 3): gray(G(z)) - gray(G(z + eps v_d)) > 0

Refinement (§3.2.1, REFERENCE §3; details as in the authors' code), in this order:

1. connected components (8-connectivity) not larger than 0.2 x the largest are removed from
   the mask (the sample is kept);
2. the sample is rejected unless its foreground fraction lies in (0, 0.5];
3. the sample is rejected unless the 12-bin histogram of the shifted image's values (all three
   channels, bins over the generator's range [-1, 1]), box-summed with width 3, has at least 2
   local maxima. The shifted image is G(z + eps v_l) for ``single``, G(z + eps v_d) for
   ``single_dark``, and both must pass for ``both``. ``hist_peak_rule="reference"`` (default)
   counts maxima as the authors' code does: bin i is one when it is >= both neighbours, the
   ends having one neighbour, so flat runs (empty end bins included) count several times and
   the check rejects mainly histograms that rise or fall across the whole range;
   ``"strict"`` counts a bin only if it is non-empty, > its left and >= its right neighbour.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from methods.latent_direction.directions import gray

MASK_RULES = ("both", "single", "single_dark")
HIST_RANGE = (-1.0, 1.0)  # generator outputs lie in [-1, 1]


def mask_from_grays(light: torch.Tensor | None, original: torch.Tensor | None, dark: torch.Tensor | None,
                    rule: str) -> torch.Tensor:
    """Boolean foreground ``[B,H,W]`` from gray images of the shifted / original codes."""
    if rule == "both":
        return light - dark > 0
    if rule == "single":
        return light - original > 0
    if rule == "single_dark":
        return original - dark > 0
    raise ValueError(f"unknown mask rule {rule!r}; choose one of {', '.join(MASK_RULES)}")


EIGHT_CONNECTED = np.ones((3, 3), bool)


def keep_large_components(mask: np.ndarray, min_ratio: float) -> np.ndarray:
    """Keep the connected components (8-connectivity) larger than ``min_ratio`` x the largest one."""
    labels, n = ndimage.label(mask, structure=EIGHT_CONNECTED)
    if n <= 1:
        return mask.copy()
    sizes = np.bincount(labels.ravel())[1:]
    keep = np.flatnonzero(sizes > min_ratio * sizes.max()) + 1
    return np.isin(labels, keep)


def foreground_fraction_ok(mask: np.ndarray, max_fraction: float) -> bool:
    """True when the foreground fraction lies in (0, max_fraction]."""
    fraction = float(mask.mean())
    return 0.0 < fraction <= max_fraction


PEAK_RULES = ("reference", "strict")


def count_histogram_peaks(values: np.ndarray, bins: int, smooth: int,
                          value_range: tuple[float, float] = HIST_RANGE, rule: str = "reference") -> int:
    """Local maxima of the box-summed (width ``smooth``, zeros beyond the ends) histogram of ``values``.

    ``reference``: bin i counts when it is >= each neighbour it has. ``strict``: when it is
    > its left and >= its right neighbour with zeros beyond the ends (a plateau counts once,
    empty bins never).
    """
    hist, _ = np.histogram(np.asarray(values, np.float64).ravel(), bins=bins, range=value_range)
    # Box sums (not means) of the integer counts: exact, so equal neighbours compare equal.
    s = np.convolve(hist, np.ones(smooth, dtype=hist.dtype), mode="same")
    if rule == "reference":
        maxima = np.r_[True, s[1:] >= s[:-1]] & np.r_[s[:-1] >= s[1:], True]
    elif rule == "strict":
        padded = np.concatenate([[0], s, [0]])  # no counts beyond the range
        maxima = (padded[1:-1] > padded[:-2]) & (padded[1:-1] >= padded[2:])
    else:
        raise ValueError(f"unknown histogram peak rule {rule!r}; choose one of {', '.join(PEAK_RULES)}")
    return int(np.count_nonzero(maxima))


@dataclass(frozen=True)
class RefineConfig:
    enabled: bool = True
    component_min_ratio: float = 0.2  # keep components > 0.2 x the largest
    max_foreground_fraction: float = 0.5  # keep samples with fraction in (0, 0.5]
    hist_bins: int = 12
    hist_smooth: int = 3
    hist_min_peaks: int = 2
    hist_peak_rule: Literal["reference", "strict"] = "reference"


def refine(mask: np.ndarray, shifted: list[np.ndarray], cfg: RefineConfig) -> tuple[np.ndarray, dict[str, bool]]:
    """Apply the three filters to one sample; ``shifted`` are its shifted images (every one must
    pass the histogram check). Returns (cleaned mask, per-filter verdicts).

    Verdicts: ``components_changed`` (step 1 removed pixels), ``fraction_fail``,
    ``histogram_fail``; each filter is evaluated on every sample so its count is its own.
    """
    cleaned = keep_large_components(mask, cfg.component_min_ratio)
    peaks = [count_histogram_peaks(x, cfg.hist_bins, cfg.hist_smooth, rule=cfg.hist_peak_rule) for x in shifted]
    return cleaned, {
        "components_changed": bool((cleaned != mask).any()),
        "fraction_fail": not foreground_fraction_ok(cleaned, cfg.max_foreground_fraction),
        "histogram_fail": min(peaks) < cfg.hist_min_peaks,
    }


@dataclass
class PairCounts:
    """Running counts of the pair stream, written to stats.jsonl (phase="pairs")."""

    drawn: int = 0
    passed: int = 0  # passed every filter
    components_changed: int = 0
    fraction_fail: int = 0
    histogram_fail: int = 0
    rejected: int = 0  # failed at least one of the two rejecting filters
    filled_unfiltered: int = 0  # rejected samples used anyway because too few passed (see MaskedPairStream)
    calls: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in vars(self).items() if k != "extra"}
        out["pass_rate"] = self.passed / self.drawn if self.drawn else None
        return {**out, **self.extra}


class MaskedPairStream:
    """PairSource of (G(z) in [0,1], refined mask) pairs for the shared segmenter trainer.

    Codes are drawn in rounds of ``batch_size``; samples that fail a filter are dropped. When
    ``max_rounds`` rounds leave the batch short (a poor generator whose shifts rarely pass),
    the batch is completed with rejected samples in draw order and ``filled_unfiltered``
    counts them, so training proceeds and the record shows how much of it was unfiltered.
    """

    num_classes = 2

    def __init__(self, generator: Any, v_light: torch.Tensor, v_dark: torch.Tensor, *, rule: str, shift: float,
                 refine_cfg: RefineConfig, max_rounds: int, stats: Any = None, log_every: int = 50) -> None:
        if rule not in MASK_RULES:
            raise ValueError(f"unknown mask rule {rule!r}")
        self.generator, self.v_light, self.v_dark = generator, v_light, v_dark
        self.rule, self.shift, self.refine_cfg = rule, shift, refine_cfg
        self.max_rounds, self.stats, self.log_every = max(1, max_rounds), stats, log_every
        self.counts = PairCounts()

    @torch.no_grad()
    def draw(self, n: int, rng: torch.Generator) -> dict[str, Any]:
        """One round of ``n`` codes: images in [-1, 1], raw masks and the shifted images."""
        g = self.generator
        z = g.sample_z(n, rng)
        images = g.generate(z)
        light = g.generate(z + self.shift * self.v_light) if self.rule != "single_dark" else None
        dark = g.generate(z + self.shift * self.v_dark) if self.rule != "single" else None
        mask = mask_from_grays(gray(light) if light is not None else None, gray(images),
                               gray(dark) if dark is not None else None, self.rule)
        return {"images": images, "mask": mask, "shifted": [x for x in (light, dark) if x is not None]}

    def pairs(self, batch_size: int, rng: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        kept_images, kept_masks, spare = [], [], []
        c = self.counts
        for _ in range(self.max_rounds):
            drawn = self.draw(batch_size, rng)
            for i in range(batch_size):
                mask = drawn["mask"][i].numpy()
                c.drawn += 1
                if self.refine_cfg.enabled:
                    mask, verdict = refine(mask, [x[i].numpy() for x in drawn["shifted"]], self.refine_cfg)
                    for name, hit in verdict.items():
                        setattr(c, name, getattr(c, name) + int(hit))
                    ok = not (verdict["fraction_fail"] or verdict["histogram_fail"])
                else:
                    ok = True
                item = (drawn["images"][i], torch.from_numpy(np.ascontiguousarray(mask)))
                if ok:
                    c.passed += 1
                    if len(kept_images) < batch_size:  # passing surplus of the last round is dropped
                        kept_images.append(item[0])
                        kept_masks.append(item[1])
                else:
                    c.rejected += 1
                    if len(spare) < batch_size:
                        spare.append(item)
            if len(kept_images) >= batch_size:
                break
        while len(kept_images) < batch_size:
            image, mask = spare.pop(0)
            kept_images.append(image)
            kept_masks.append(mask)
            c.filled_unfiltered += 1
        c.calls += 1
        if self.stats is not None and (c.calls == 1 or c.calls % self.log_every == 0):
            self.stats.write(phase="pairs", **c.as_dict())
        images = ((torch.stack(kept_images) + 1) / 2).clamp(0, 1).float()
        return images, torch.stack(kept_masks).long()


def resize_pairs(images: torch.Tensor, masks: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Bilinear (antialiased) images and nearest masks at ``size`` (for figures at a common size)."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images, masks
    images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    masks = F.interpolate(masks[:, None].float(), size=(size, size), mode="nearest")[:, 0].long()
    return images, masks
