"""Fréchet Inception Distance: the numerics (no network, no torch-fidelity import).

Feature extraction lives in :mod:`segbench.feature_nets` (torch-fidelity's InceptionV3 with the
offline TF-Inception 2015-12-05 weights). This module turns 2048-d features into Gaussian
statistics, caches the real-image statistics on disk, and computes the distance.

FID = ||mu1 - mu2||^2 + Tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^(1/2)).

Reference formula: ``calculate_frechet_distance`` of pytorch-fid (mseitzer/pytorch-fid,
``src/pytorch_fid/fid_score.py``, after TTUR's ``fid.py``): ``scipy.linalg.sqrtm`` of
``sigma1 @ sigma2``; if the result is not finite (singular product), retry with ``eps`` added to
both diagonals (the "eps offset fix"); a complex result whose diagonal imaginary part exceeds
1e-3 is an error, otherwise the real part is used. torch-fidelity (``metric_fid.
fid_statistics_to_metric``, 0.4.0) computes the same quantity via the eigenvalues of
``sigma1 @ sigma2``; the two agree to numerical precision (tested in tests/metrics/test_fid.py).
Covariances are the unbiased (ddof=1) ``np.cov(features, rowvar=False)``, as in both references.
"""
from __future__ import annotations

import hashlib
import os
import re
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

__all__ = [
    "frechet_distance",
    "feature_statistics",
    "FeatureStatsAccumulator",
    "fid_metric_name",
    "content_hash",
    "cached_real_statistics",
    "stats_cache_path",
    "DEFAULT_EXTRACTOR_TAG",
]

#: Identifies the feature network in cache file names (statistics from another network must not
#: be mixed up with these).
DEFAULT_EXTRACTOR_TAG = "tfinception20151205"


# --------------------------------------------------------------------------- distance


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     eps: float = 1e-6) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2) (pytorch-fid's formula).

    ``scipy.linalg.sqrtm(sigma1 @ sigma2)``; if it is not finite, ``eps * I`` is added to both
    covariances and the square root is retried; an imaginary diagonal component above 1e-3
    raises ``ValueError``, smaller ones are dropped. Computed in float64.
    """
    from scipy import linalg

    mu1 = np.atleast_1d(np.asarray(mu1, dtype=np.float64))
    mu2 = np.atleast_1d(np.asarray(mu2, dtype=np.float64))
    sigma1 = np.atleast_2d(np.asarray(sigma1, dtype=np.float64))
    sigma2 = np.atleast_2d(np.asarray(sigma2, dtype=np.float64))
    if mu1.shape != mu2.shape or mu1.ndim != 1:
        raise ValueError(f"mean vectors have different or bad shapes: {mu1.shape} vs {mu2.shape}")
    d = mu1.shape[0]
    if sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise ValueError(f"covariances must be {d}x{d}, got {sigma1.shape} and {sigma2.shape}")

    diff = mu1 - mu2
    covmean = linalg.sqrtm(sigma1.dot(sigma2))
    if not np.isfinite(covmean).all():
        warnings.warn(f"FID: singular product of covariances; adding {eps} to their diagonals",
                      RuntimeWarning, stacklevel=2)
        offset = np.eye(d) * eps
        covmean = linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"FID: imaginary component {np.max(np.abs(covmean.imag))} in sqrtm")
        covmean = covmean.real
    tr_covmean = np.trace(covmean)
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2.0 * tr_covmean)


# --------------------------------------------------------------------------- statistics


def _as_float64_2d(features: Any) -> np.ndarray:
    if hasattr(features, "detach"):  # torch tensor, without importing torch
        features = features.detach().cpu().numpy()
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"features must be [N, D], got shape {x.shape}")
    return x


def feature_statistics(features: Any) -> tuple[np.ndarray, np.ndarray]:
    """Mean [D] and unbiased covariance [D, D] (``np.cov(rowvar=False)``) of [N, D] features."""
    x = _as_float64_2d(features)
    if x.shape[0] < 2:
        raise ValueError(f"need at least 2 feature vectors for a covariance, got {x.shape[0]}")
    return x.mean(axis=0), np.cov(x, rowvar=False)


class FeatureStatsAccumulator:
    """Streaming mean/covariance of feature batches: running sum, sum of outer products, count.

    To keep float64 cancellation small the sums are taken about a fixed shift (the mean of the
    first batch); ``statistics()`` after any sequence of ``update`` calls equals
    :func:`feature_statistics` on all rows at once (to ~1e-12 relative).
    """

    def __init__(self) -> None:
        self.count = 0
        self._shift: np.ndarray | None = None
        self._sum: np.ndarray | None = None
        self._outer: np.ndarray | None = None

    @property
    def dim(self) -> int | None:
        return None if self._shift is None else int(self._shift.shape[0])

    def update(self, features: Any) -> "FeatureStatsAccumulator":
        x = _as_float64_2d(features)
        if x.shape[0] == 0:
            return self
        if self._shift is None:
            self._shift = x.mean(axis=0)
            self._sum = np.zeros_like(self._shift)
            self._outer = np.zeros((x.shape[1], x.shape[1]), dtype=np.float64)
        elif x.shape[1] != self._shift.shape[0]:
            raise ValueError(f"feature dim changed: {x.shape[1]} vs {self._shift.shape[0]}")
        xs = x - self._shift
        self._sum += xs.sum(axis=0)
        self._outer += xs.T @ xs
        self.count += x.shape[0]
        return self

    def merge(self, other: "FeatureStatsAccumulator") -> "FeatureStatsAccumulator":
        """Add another accumulator's rows (e.g. from another worker) into this one."""
        if other.count == 0:
            return self
        if self.count == 0:
            self._shift, self.count = other._shift.copy(), other.count
            self._sum, self._outer = other._sum.copy(), other._outer.copy()
            return self
        if other._shift.shape != self._shift.shape:
            raise ValueError("cannot merge accumulators of different feature dims")
        # re-express other's sums about self's shift: x - a = (x - b) + (b - a)
        d = other._shift - self._shift
        s = other._sum
        self._outer += other._outer + np.outer(s, d) + np.outer(d, s) + other.count * np.outer(d, d)
        self._sum += s + other.count * d
        self.count += other.count
        return self

    def mean(self) -> np.ndarray:
        if self.count == 0:
            raise ValueError("no features accumulated")
        return self._shift + self._sum / self.count

    def covariance(self) -> np.ndarray:
        if self.count < 2:
            raise ValueError(f"need at least 2 feature vectors for a covariance, got {self.count}")
        centred = self._outer - np.outer(self._sum, self._sum) / self.count
        return centred / (self.count - 1)

    def statistics(self) -> tuple[np.ndarray, np.ndarray]:
        """(mu, sigma), as :func:`feature_statistics` would give on all rows."""
        return self.mean(), self.covariance()


# --------------------------------------------------------------------------- naming


def fid_metric_name(n_generated: int) -> str:
    """Metric name carrying the number of generated images: 50000 -> 'fid50k', 5000 -> 'fid5k',
    2500 -> 'fid2.5k', 300 -> 'fid300' (FID is biased by sample count, so the name says it)."""
    if isinstance(n_generated, bool) or int(n_generated) != n_generated or n_generated < 1:
        raise ValueError(f"n_generated must be a positive integer, got {n_generated!r}")
    n = int(n_generated)
    if n < 1000:
        return f"fid{n}"
    if n % 1000 == 0:
        return f"fid{n // 1000}k"
    return f"fid{n // 1000}.{f'{n % 1000:03d}'.rstrip('0')}k"


# --------------------------------------------------------------------------- caching


def content_hash(items: Iterable[Any] | np.ndarray, root: str | os.PathLike | None = None) -> str:
    """Cheap fingerprint (16 hex chars) of a dataset's content.

    ``items`` is a list of file paths and/or arrays (or one array). A path contributes its name
    (relative to ``root`` when given, so moving the data folder keeps the hash), size and mtime
    (ns); nothing is read. An array (or torch tensor) contributes dtype, shape and raw bytes.
    Items are hashed individually and the sorted digests combined, so the order of a file list
    does not matter (the statistics do not depend on it either). One array passed on its own is
    hashed whole.
    """
    def digest_array(a: Any) -> bytes:
        if hasattr(a, "detach"):
            a = a.detach().cpu().numpy()
        a = np.ascontiguousarray(a)
        h = hashlib.blake2b(digest_size=16)
        h.update(f"array|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.view(np.uint8).reshape(-1).data if a.size else b"")
        return h.digest()

    def digest_path(p: str | os.PathLike) -> bytes:
        path = Path(p)
        st = path.stat()
        name = os.path.relpath(path, root) if root is not None else os.fspath(path)
        name = name.replace(os.sep, "/")
        return hashlib.blake2b(f"file|{name}|{st.st_size}|{st.st_mtime_ns}".encode(),
                               digest_size=16).digest()

    if isinstance(items, np.ndarray) or hasattr(items, "detach"):
        digests = [digest_array(items)]
    else:
        digests = sorted(
            digest_path(it) if isinstance(it, (str, os.PathLike)) else digest_array(it)
            for it in items
        )
    top = hashlib.blake2b(digest_size=8)
    top.update(f"n={len(digests)}|".encode())
    for d in digests:
        top.update(d)
    return top.hexdigest()


def _slug(value: Any) -> str:
    s = re.sub(r"[^A-Za-z0-9.+-]+", "-", str(value)).strip("-")
    if not s:
        raise ValueError(f"cannot build a cache file name from {value!r}")
    return s


def _resolution_slug(resolution: Any) -> str:
    if isinstance(resolution, (tuple, list)):
        if len(resolution) != 2:
            raise ValueError(f"resolution must be an int or (height, width), got {resolution!r}")
        h, w = (int(r) for r in resolution)
        return f"{h}px" if h == w else f"{h}x{w}px"
    return f"{int(resolution)}px"


def stats_cache_path(cache_dir: str | os.PathLike, dataset: str, split: str, resolution: Any,
                     content_hash: str, *, extractor: str = DEFAULT_EXTRACTOR_TAG) -> Path:
    """``<cache_dir>/fidstats_<dataset>_<split>_<res>px_<hash>_<extractor>.npz``."""
    name = (f"fidstats_{_slug(dataset)}_{_slug(split)}_{_resolution_slug(resolution)}_"
            f"{_slug(content_hash)}_{_slug(extractor)}.npz")
    return Path(cache_dir) / name


def cached_real_statistics(cache_dir: str | os.PathLike, dataset: str, split: str,
                           resolution: Any, content_hash: str,
                           compute_fn: Callable[[], tuple[np.ndarray, np.ndarray]], *,
                           extractor: str = DEFAULT_EXTRACTOR_TAG
                           ) -> tuple[np.ndarray, np.ndarray]:
    """Real-image (mu, sigma), cached as an .npz keyed by dataset, split, resolution, content
    hash (and the feature network tag). ``compute_fn()`` -> (mu, sigma) runs only on a miss or
    an unreadable cache file; the file is written atomically."""
    path = stats_cache_path(cache_dir, dataset, split, resolution, content_hash,
                            extractor=extractor)
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                mu, sigma = np.array(z["mu"]), np.array(z["sigma"])
            if mu.ndim == 1 and sigma.shape == (mu.shape[0], mu.shape[0]):
                return mu, sigma
            warnings.warn(f"ignoring malformed FID statistics cache {path}", RuntimeWarning)
        except Exception as exc:  # corrupt / truncated file: recompute
            warnings.warn(f"ignoring unreadable FID statistics cache {path}: {exc}", RuntimeWarning)

    mu, sigma = compute_fn()
    mu = np.asarray(mu, dtype=np.float64)
    sigma = np.asarray(sigma, dtype=np.float64)
    if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
        raise ValueError(f"compute_fn must return (mu [D], sigma [D, D]), got {mu.shape}, "
                         f"{sigma.shape}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.stem + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, mu=mu, sigma=sigma, dataset=str(dataset), split=str(split),
                     resolution=_resolution_slug(resolution), content_hash=str(content_hash),
                     extractor=str(extractor))
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return mu, sigma
