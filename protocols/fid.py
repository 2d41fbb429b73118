"""FID protocols: a generative method's samples against a dataset split's real images.

The metric name carries the number of generated images (option ``n_generated``: ``fid5k``,
``fid50k``, ..., ``fid100`` for a quick sanity check), because FID is biased by the sample count
and numbers with different counts are not comparable. ``--limit`` caps only the real side. Real-image statistics are cached on disk, keyed by
dataset, split, resolution, a content fingerprint of the split and the feature network
(:func:`protocols.metrics.fid.cached_real_statistics`), so re-scoring a run re-extracts only the
generated side.

The value does not depend on ``--batch-size``: both sides go through the feature network, and the
method's ``sample(n, seed=...)``, in fixed chunks of :data:`SAMPLE_CHUNK` images, chunk ``c`` of
the generated side drawn with ``seed=SAMPLE_SEED_BASE + c``. Generated image ``i`` is image
``i % SAMPLE_CHUNK`` of chunk ``i // SAMPLE_CHUNK``, the same image whatever the batch size (and,
as ``SAMPLE_CHUNK`` divides every ``n_generated`` choice, whatever the count). Version 1 drew a
seed per batch of ``--batch-size`` images, so its values depended on it.

Features: torch-fidelity's InceptionV3 with the offline TF-Inception weights
(:mod:`segbench.feature_nets`), on the ``device`` ``evaluate`` is given; nothing is downloaded.
FID is a distance between two feature distributions, so it has no per-image values.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch

from segbench import feature_nets
from segbench.datasets.base import Split
from segbench.datasets.paths import cache_dir
from segbench.protocols.evaluation import batch_ranges
from segbench.protocols.metrics.fid import FeatureStatsAccumulator, cached_real_statistics, content_hash, \
    frechet_distance
from segbench.protocols.spec import MetricSpec, Protocol, ProtocolSpec, protocol_device

# Generated-image seeds start here so they never coincide with training seeds 0, 1, 2, ...
SAMPLE_SEED_BASE = 1_000_003
# Images per method.sample call and per feature-network call, on both sides: a constant, never
# --batch-size. It divides every N_GENERATED_CHOICES count, so every chunk is full.
SAMPLE_CHUNK = 50
# Option values are the metric-name suffixes (fid_metric_name spelling); 5k is the CPU-sized default.
N_GENERATED_CHOICES = ("5k", "50k", "10k", "1k", "100")


def parse_count(text: str) -> int:
    """'5k' -> 5000, '100' -> 100 (inverse of fid_metric_name's suffix)."""
    return int(float(text[:-1]) * 1000) if text.endswith("k") else int(text)


def split_fingerprint(split: Split) -> str:
    """Content key of a split for the statistics cache: the split's own cheap fingerprint (file
    names, sizes, mtimes) when it offers one, else a hash of every decoded image."""
    own = getattr(split, "content_fingerprint", None)
    if callable(own):
        return own()
    return content_hash([split.image(i) for i in range(len(split))])


def real_statistics(split: Split, dataset_name: str, image_size: int, *, batch_size: int, progress: bool,
                    device: Any) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of the split's features, in chunks of ``SAMPLE_CHUNK`` images
    (``batch_size`` is accepted for the protocol interface and does not change the value), with
    the feature network on ``device`` (see ``protocol_device``)."""
    device = protocol_device(device)

    def compute() -> tuple[np.ndarray, np.ndarray]:
        acc = FeatureStatsAccumulator()
        for indices in batch_ranges(len(split), SAMPLE_CHUNK, progress=progress,
                                    desc=f"real {dataset_name}/{split.name}"):
            images = np.stack([split.image(i) for i in indices])  # uint8 [B,H,W,3]
            acc.update(feature_nets.inception_features(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(),
                                                       device=device))
        return acc.statistics()

    # The device is not part of the cache key: features agree across devices to float tolerance.
    return cached_real_statistics(cache_dir() / "fid_stats", dataset_name, f"{split.name}-n{len(split)}",
                                  image_size, split_fingerprint(split), compute)


def generated_statistics(method: Any, n: int, *, batch_size: int, progress: bool,
                         device: Any) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of the features of ``n`` samples, drawn ``SAMPLE_CHUNK`` at a time with
    ``seed=SAMPLE_SEED_BASE + chunk`` (``batch_size`` does not change the value), with the
    feature network on ``device`` (see ``protocol_device``)."""
    device = protocol_device(device)

    acc = FeatureStatsAccumulator()
    for chunk, indices in enumerate(batch_ranges(n, SAMPLE_CHUNK, progress=progress, desc="generated")):
        acc.update(feature_nets.inception_features(method.sample(len(indices), seed=SAMPLE_SEED_BASE + chunk),
                                                   device=device))
    return acc.statistics()


class FidProtocol(Protocol):
    """Subclasses set ``spec`` with a ``reference`` split role and the ``n_generated`` option."""

    def n_eval(self, splits: Mapping[str, Any]) -> int:
        return parse_count(self.options["n_generated"])  # the generated side; --limit caps only the real one

    def evaluate(self, method: Any, splits: Mapping[str, Any], *, batch_size: int = 32, progress: bool = True,
                 device: Any = None) -> dict[str, float]:
        device = protocol_device(device)  # None: the CPU
        reference = splits["reference"]
        mu_real, sigma_real = real_statistics(reference, self.spec.dataset, self.spec.image_size,
                                              batch_size=batch_size, progress=progress, device=device)
        mu_gen, sigma_gen = generated_statistics(method, self.n_eval(splits), batch_size=batch_size,
                                                 progress=progress, device=device)
        return {"fid": frechet_distance(mu_gen, sigma_gen, mu_real, sigma_real)}


class CubPhotosFid(FidProtocol):
    spec = ProtocolSpec(
        name="cub_photos_fid",
        version="2",
        reproduces="image quality on real birds (GANSeg supp. §C protocol: samples vs training images)",
        dataset="cub_photos",
        splits={"fit": "all", "reference": "all"},
        image_size=128,
        needs=frozenset({"samples"}),
        num_parts=1,
        metrics=(MetricSpec("fid{n_generated}", False, "all", "",
                            "FID of n generated images vs the 5,902 real CUB photos (the name says n)", key="fid"),),
        options={"n_generated": N_GENERATED_CHOICES},
        smoke_options={"n_generated": "100"},
    )


def _training_set_fid(name: str, dataset: str, table: str, num_parts: int = 8) -> ProtocolSpec:
    """GANSeg supp. §C: 50,000 samples against the dataset's GAN-training images."""
    return ProtocolSpec(
        name=name, version="2", reproduces=table, dataset=dataset,
        splits={"fit": "train", "reference": "train"}, image_size=128, needs=frozenset({"samples"}),
        num_parts=num_parts,
        metrics=(MetricSpec("fid{n_generated}", False, "train", "",
                            "FID of n generated images vs the GAN-training images (the name says n)", key="fid"),),
        options={"n_generated": ("50k",) + tuple(c for c in N_GENERATED_CHOICES if c != "50k")},
        smoke_options={"n_generated": "100"},
    )


class CelebaWildFid(FidProtocol):
    spec = _training_set_fid("fid_celeba_wild", "celeba_wild", "GANSeg supp. §C FID, wild CelebA")


class CubFid(FidProtocol):
    spec = _training_set_fid("fid_cub", "cub", "GANSeg supp. §C FID, CUB")


class FlowersFid(FidProtocol):
    spec = _training_set_fid("fid_flowers", "flowers", "GANSeg supp. §C FID, Flowers")


class TaichiFid(FidProtocol):
    spec = _training_set_fid("fid_taichi", "taichi", "GANSeg supp. §C FID, Taichi", num_parts=10)
