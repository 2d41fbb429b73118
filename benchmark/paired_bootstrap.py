"""Paired bootstrap confidence interval of a mean difference (pure function, no I/O).

Given per-image scores of two methods on the same images, the statistic is the mean of the
paired differences ``a - b``; its sampling distribution is estimated by resampling the images
(the pairs) with replacement, and the interval is the percentile interval of the resampled
means. The generator is ``numpy.random.default_rng(seed)``, so an interval is a function of its
inputs: the same scores in the same order give the same numbers.

Means are taken around a centre (the first difference), ``centre + mean(d - centre)``, so a
constant difference ``c`` gives exactly ``[c, c]`` and identical scores exactly ``[0, 0]``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

RESAMPLES = 10_000
SEED = 0
LEVEL = 0.95
_CHUNK_ELEMENTS = 1 << 22  # indices drawn per block (bounds memory: 10k resamples x 100k images)


@dataclass(frozen=True)
class Interval:
    mean: float  # mean of the paired differences a - b
    low: float
    high: float
    n: int  # number of pairs
    resamples: int

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0


def paired_bootstrap(a, b, *, resamples: int = RESAMPLES, seed: int = SEED, level: float = LEVEL) -> Interval:
    """Percentile bootstrap interval (``level``, default 95%) of ``mean(a - b)`` over paired samples."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.ndim != 1 or a.shape != b.shape:
        raise ValueError(f"a and b must be 1-d of the same length, got {a.shape} and {b.shape}")
    if a.size == 0:
        raise ValueError("no pairs to bootstrap")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("scores must be finite")
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    diff = a - b
    centre = diff[0]
    dev = diff - centre
    n = diff.size
    rng = np.random.default_rng(seed)
    means = np.empty(resamples, np.float64)
    rows = max(1, _CHUNK_ELEMENTS // n)
    for start in range(0, resamples, rows):
        stop = min(resamples, start + rows)
        means[start:stop] = centre + dev[rng.integers(0, n, size=(stop - start, n))].mean(axis=1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return Interval(mean=float(centre + dev.mean()), low=float(low), high=float(high), n=int(n),
                    resamples=int(resamples))
