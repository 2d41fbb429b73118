"""Step 2 of Melas-Kyriazi et al. (§3.2, Eqs. 2-3, §3.2.1): masks from the found directions,
refinement filters, and the stream of (image, mask) pairs the segmenter trains on.

Mask rules, with eps = 5, foreground where the difference is positive:

- ``both`` (Eq. 2):        gray(G(z + eps v_l)) - gray(G(z + eps v_d)) > 0
- ``single`` (Eq. 3):      gray(G(z + eps v_l)) - gray(G(z)) > 0
- ``single_dark`` (Eq. 3): gray(G(z)) - gray(G(z + eps v_d)) > 0

Refinement (§3.2.1; details as in the released code, lukemelas/unsupervised-image-segmentation
``datasets/gan_dataset.py``), in this order:

1. connected components (8-connectivity) not larger than 0.2 x the largest are removed from
   the mask (the sample is kept);
2. area: the sample is rejected unless the foreground fraction lies in [0, 0.5] (empty masks
   pass: ``get_area_filter_indices`` thresholds [0.0, 0.5], both ends inclusive). Which mask is
   checked: for ``single`` / ``single_dark`` the rule's mask; for ``both`` the light mask
   (rule ``single``) AND the dark mask (rule ``single_dark``), each after its own step 1, while
   the combined mask is not checked (``DualGANDataset``, gan_dataset.py:423-425). Switches:
   ``allow_empty=False`` gives (0, 0.5], ``area_masks="combined"`` checks the combined mask
   (both as this project did before issue 12);
3. the sample is rejected unless the 12-bin histogram of the shifted image's values (all three
   channels, bins over the generator's range [-1, 1]), box-summed with width 3, has at least 2
   local maxima. The shifted image is G(z + eps v_l) for ``single``, G(z + eps v_d) for
   ``single_dark``, and both must pass for ``both``. ``hist_peak_rule="reference"`` (default)
   counts maxima as the authors' code does: bin i is one when it is >= both neighbours, the
   ends having one neighbour, so flat runs (empty end bins included) count several times and
   the check rejects mainly histograms that rise or fall across the whole range;
   ``"strict"`` counts a bin only if it is non-empty, > its left and >= its right neighbour.

Filling a batch (``MaskedPairStream.pairs``): rounds of ``batch_size`` codes are drawn until
enough samples passed; ``max_empty_rounds`` (25) consecutive rounds in which nothing passed raise
a UserError, as the released code's ``@retry(tries=25)`` does (gan_dataset.py:273).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from segbench.benchmark.errors import UserError
from segbench.methods.latent_direction.directions import gray

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


def foreground_fraction_ok(mask: np.ndarray, max_fraction: float, allow_empty: bool = True) -> bool:
    """True when the foreground fraction lies in [0, max_fraction] (official), or in
    (0, max_fraction] when ``allow_empty`` is False."""
    fraction = float(mask.mean())
    return (allow_empty or fraction > 0.0) and fraction <= max_fraction


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
    max_foreground_fraction: float = 0.5  # keep samples with fraction in [0, 0.5]
    # Official gan_dataset.py:106: 0 <= fraction, so an empty mask passes. False: (0, max].
    allow_empty: bool = True
    # Rule "both": official gan_dataset.py:423-425 checks the light and the dark mask, each on
    # its own; "combined" checks the combined mask instead (this project before issue 12).
    area_masks: Literal["each", "combined"] = "each"
    hist_bins: int = 12
    hist_smooth: int = 3
    hist_min_peaks: int = 2
    hist_peak_rule: Literal["reference", "strict"] = "reference"


def refine(mask: np.ndarray, shifted: list[np.ndarray], cfg: RefineConfig,
           direction_masks: list[np.ndarray] | None = None) -> tuple[np.ndarray, dict[str, bool]]:
    """Apply the three filters to one sample; ``shifted`` are its shifted images (every one must
    pass the histogram check). Returns (cleaned mask, per-filter verdicts).

    ``direction_masks``: for rule ``both``, the raw light and dark masks; with
    ``area_masks="each"`` each is cleaned by step 1 and must pass the area check, and ``mask``
    (the combined mask) is only cleaned. Without them (single rules, or ``"combined"``) the
    cleaned ``mask`` itself is checked.

    Verdicts: ``components_changed`` (step 1 removed pixels of ``mask``), ``fraction_fail``,
    ``histogram_fail``; each filter is evaluated on every sample so its count is its own.
    """
    if cfg.area_masks not in ("each", "combined"):
        raise ValueError(f"area_masks must be 'each' or 'combined', got {cfg.area_masks!r}")
    cleaned = keep_large_components(mask, cfg.component_min_ratio)
    if direction_masks is not None and cfg.area_masks == "each":
        checked = [keep_large_components(m, cfg.component_min_ratio) for m in direction_masks]
    else:
        checked = [cleaned]
    peaks = [count_histogram_peaks(x, cfg.hist_bins, cfg.hist_smooth, rule=cfg.hist_peak_rule) for x in shifted]
    return cleaned, {
        "components_changed": bool((cleaned != mask).any()),
        "fraction_fail": not all(foreground_fraction_ok(m, cfg.max_foreground_fraction, cfg.allow_empty)
                                 for m in checked),
        "histogram_fail": min(peaks) < cfg.hist_min_peaks,
    }


FILL_MODES = ("official", "unfiltered")


@dataclass
class PairCounts:
    """Running counts of the pair stream, written to stats.jsonl (phase="pairs")."""

    drawn: int = 0
    passed: int = 0  # passed every filter
    components_changed: int = 0
    fraction_fail: int = 0
    histogram_fail: int = 0
    rejected: int = 0  # failed at least one of the two rejecting filters
    used: int = 0  # samples handed to the segmenter
    surplus_dropped: int = 0  # passed, but the batch was already full (see MaskedPairStream)
    filled_unfiltered: int = 0  # rejected samples used anyway (fill="unfiltered" only)
    calls: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in vars(self).items() if k != "extra"}
        out["pass_rate"] = self.passed / self.drawn if self.drawn else None
        return {**out, **self.extra}


class MaskedPairStream:
    """PairSource of (G(z) in [0,1], refined mask) pairs for the shared segmenter trainer.

    Codes are drawn in rounds of ``batch_size`` and samples that fail a filter are dropped.

    - ``fill="official"`` (gan_dataset.py ``__getitem__`` and ``@retry(tries=25)``, :273): rounds
      are drawn until the batch is full, however many that takes; ``max_empty_rounds``
      consecutive rounds with no passing sample raise a UserError.
    - ``fill="unfiltered"`` (this project before issue 12): after ``max_rounds`` rounds a short
      batch is completed with rejected samples in draw order, counted in ``filled_unfiltered``.

    Surplus: the released code keeps every passing sample of the last round, so its batches
    hold >= batch_size samples (``truncate_batch=False``). ``keep_surplus=True`` does that (the
    shared trainer accepts larger batches from a source with ``keep_surplus``); False drops
    the surplus (``surplus_dropped``). Carrying it over to the next call instead would make a
    resumed run differ: the trainer's checkpoint holds the pair RNG, not this stream's state.
    """

    num_classes = 2

    def __init__(self, generator: Any, v_light: torch.Tensor, v_dark: torch.Tensor, *, rule: str, shift: float,
                 refine_cfg: RefineConfig, fill: str = "official", max_empty_rounds: int = 25, max_rounds: int = 20,
                 keep_surplus: bool = False, stats: Any = None, log_every: int = 50) -> None:
        if rule not in MASK_RULES:
            raise ValueError(f"unknown mask rule {rule!r}")
        if fill not in FILL_MODES:
            raise ValueError(f"unknown fill mode {fill!r}; choose one of {', '.join(FILL_MODES)}")
        self.generator, self.v_light, self.v_dark = generator, v_light, v_dark
        self.rule, self.shift, self.refine_cfg = rule, shift, refine_cfg
        self.fill, self.keep_surplus = fill, keep_surplus
        self.max_empty_rounds, self.max_rounds = max(1, max_empty_rounds), max(1, max_rounds)
        self.stats, self.log_every = stats, log_every
        self.counts = PairCounts()

    @torch.no_grad()
    def draw(self, n: int, rng: torch.Generator) -> dict[str, Any]:
        """One round of ``n`` codes: images in [-1, 1], raw masks (the rule's, and for ``both`` the
        light and dark ones the area filter checks) and the shifted images. The generator runs
        on its own device; the round comes back on the CPU, where the filters run."""
        g = self.generator
        z = g.sample_z(n, rng)
        images = g.generate(z)
        light = g.generate(z + self.shift * self.v_light.to(z.device)) if self.rule != "single_dark" else None
        dark = g.generate(z + self.shift * self.v_dark.to(z.device)) if self.rule != "single" else None
        grays = (gray(light) if light is not None else None, gray(images), gray(dark) if dark is not None else None)
        out = {"images": images.cpu(), "mask": mask_from_grays(*grays, self.rule).cpu(),
               "shifted": [x.cpu() for x in (light, dark) if x is not None]}
        cfg = self.refine_cfg
        if self.rule == "both" and cfg.enabled and cfg.area_masks == "each":  # only the area filter reads them
            out["direction_masks"] = [mask_from_grays(*grays, rule).cpu() for rule in ("single", "single_dark")]
        return out

    def filter_round(self, n: int, rng: torch.Generator) -> tuple[list[tuple[torch.Tensor, torch.Tensor]],
                                                                    list[tuple[torch.Tensor, torch.Tensor]]]:
        """Draw and refine one round of ``n`` codes; returns (passed, rejected) (image, mask)
        pairs in draw order and updates the counts."""
        drawn, c = self.draw(n, rng), self.counts
        passed, rejected = [], []
        for i in range(n):
            mask = drawn["mask"][i].numpy()
            c.drawn += 1
            ok = True
            if self.refine_cfg.enabled:
                direction = [m[i].numpy() for m in drawn["direction_masks"]] if "direction_masks" in drawn else None
                mask, verdict = refine(mask, [x[i].numpy() for x in drawn["shifted"]], self.refine_cfg, direction)
                for name, hit in verdict.items():
                    setattr(c, name, getattr(c, name) + int(hit))
                ok = not (verdict["fraction_fail"] or verdict["histogram_fail"])
            item = (drawn["images"][i], torch.from_numpy(np.ascontiguousarray(mask)))
            (passed if ok else rejected).append(item)
        c.passed += len(passed)
        c.rejected += len(rejected)
        return passed, rejected

    def _fill_official(self, batch_size: int, rng: torch.Generator) -> list[tuple[torch.Tensor, torch.Tensor]]:
        kept: list[tuple[torch.Tensor, torch.Tensor]] = []
        empty_rounds = 0
        while len(kept) < batch_size:
            passed, _ = self.filter_round(batch_size, rng)
            empty_rounds = 0 if passed else empty_rounds + 1
            if empty_rounds >= self.max_empty_rounds:
                c = self.counts
                raise UserError(
                    f"latent_direction: no generated sample passed the mask filters in {empty_rounds} consecutive "
                    f"rounds of {batch_size} codes (so far {c.passed} of {c.drawn} passed; area filter rejected "
                    f"{c.fraction_fail}, histogram filter {c.histogram_fail}); the directions do not give usable "
                    "masks for this generator. --set batch_fill=unfiltered trains on unfiltered samples instead")
            kept += passed
        return kept

    def _fill_unfiltered(self, batch_size: int, rng: torch.Generator) -> list[tuple[torch.Tensor, torch.Tensor]]:
        kept: list[tuple[torch.Tensor, torch.Tensor]] = []
        spare: list[tuple[torch.Tensor, torch.Tensor]] = []
        for _ in range(self.max_rounds):
            passed, rejected = self.filter_round(batch_size, rng)
            kept += passed
            spare += rejected[:max(0, batch_size - len(spare))]
            if len(kept) >= batch_size:
                break
        missing = max(0, batch_size - len(kept))
        self.counts.filled_unfiltered += missing
        return kept + spare[:missing]

    def pairs(self, batch_size: int, rng: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.counts
        items = (self._fill_official if self.fill == "official" else self._fill_unfiltered)(batch_size, rng)
        if not self.keep_surplus:
            c.surplus_dropped += len(items) - batch_size
            items = items[:batch_size]
        c.used += len(items)
        c.calls += 1
        if self.stats is not None and (c.calls == 1 or c.calls % self.log_every == 0):
            self.stats.write(phase="pairs", **c.as_dict())
        images = ((torch.stack([image for image, _ in items]) + 1) / 2).clamp(0, 1).float()
        return images, torch.stack([mask for _, mask in items]).long()


def resize_pairs(images: torch.Tensor, masks: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Bilinear (antialiased) images and nearest masks at ``size`` (for figures at a common size)."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images, masks
    images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    masks = F.interpolate(masks[:, None].float(), size=(size, size), mode="nearest")[:, 0].long()
    return images, masks
