"""Protocol specs: what a protocol reproduces, which splits and outputs it needs, and the
metrics it emits. Metric names encode the protocol variant (``fg_iou_ganseg``), so a number
always says how it was computed.

The evaluate contract: a protocol declares each metric once, as a ``MetricSpec`` with a short
``key``. Its ``evaluate`` returns one value per key: a float for a dataset-level number (max
F-beta over thresholds, Hungarian mIoU over the split, FID), or ``PerImage`` for a number that is
the plain mean over the scored images, carrying those per-image values and the images' ids.
``Protocol.score`` does the rest, once for every protocol: the final names (options filled in),
the check that exactly the declared metrics came back as finite floats, the records
``{"metric", "split", "value", "n_eval"}`` the runner stores and the per-image rows.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping, Sequence, Union

import numpy as np

from segbench.benchmark.errors import UserError


def protocol_device(device: Any = None) -> Any:
    """Where a protocol's own networks run (FID's feature extractor), as a ``torch.device``:
    ``device`` as ``--device`` names it (``auto``, ``cpu``, ``cuda``, ``cuda:N`` or a
    ``torch.device``; ``methods.context.resolve_device``), and the host CPU when it is None (a
    direct caller that names none). The one place a protocol turns "no device" into the CPU."""
    import torch

    from segbench.methods.context import resolve_device

    return torch.device("cpu") if device is None else resolve_device(device)


# A per-image mean may differ from the reported value by summation order only (the value is
# computed as the reference code does, e.g. nanmean(errors) * 100 rather than mean(errors * 100)).
PER_IMAGE_MEAN_RTOL = 1e-9


@dataclass(frozen=True)
class MetricSpec:
    """``name`` may hold ``{option}`` placeholders filled from the protocol's options; ``key``
    (default: ``name``) is what ``Protocol.evaluate`` keys this metric's value by."""

    name: str
    higher_is_better: bool
    split: str = "test"
    unit: str = ""
    description: str = ""
    key: str = ""

    def __post_init__(self) -> None:
        if not self.key:
            object.__setattr__(self, "key", self.name)


@dataclass(frozen=True)
class PerImage:
    """A metric reported as the plain mean over images: ``value`` as the reference computes it,
    and the per-image ``values`` it averages with their ``image_ids`` (``Split.image_id``). Images
    where the metric is undefined (e.g. no visible landmark) are left out of both."""

    value: float
    image_ids: Sequence[str]
    values: np.ndarray


MetricValue = Union[float, PerImage]


@dataclass(frozen=True)
class ProtocolScores:
    """What ``Protocol.score`` returns: records in the spec's metric order, and per-image rows
    ``(split, image_id, metric, value)`` for the ``PerImage`` metrics (metric = the final name)."""

    records: list[dict[str, Any]]
    per_image: list[tuple[str, str, str, float]]


@dataclass(frozen=True)
class ProtocolSpec:
    name: str
    version: str
    reproduces: str  # the paper table (or "segbench" for our own benchmarks)
    dataset: str  # a DATASETS registry name
    splits: Mapping[str, str]  # role ("fit", "regression_fit", "test") -> dataset split name
    image_size: int
    needs: frozenset[str]  # subset of {"parts", "samples"}
    metrics: tuple[MetricSpec, ...]
    num_parts: int  # K a part method is asked for unless the user sets it
    # option name -> allowed values; the first value is the default.
    options: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    dataset_options: Mapping[str, Any] = field(default_factory=dict)
    # Options for a cheap end-to-end check (e.g. FID on 100 samples); the conformance suite uses them.
    smoke_options: Mapping[str, str] = field(default_factory=dict)

    @property
    def scored_role(self) -> str:
        """The split role the metrics are computed on ("test", or e.g. FID's "reference")."""
        return "test" if "test" in self.splits else next(r for r in self.splits if r != "fit")

    def resolve_options(self, given: Mapping[str, str]) -> dict[str, str]:
        resolved = {name: values[0] for name, values in self.options.items()}
        for key, value in given.items():
            if key not in self.options:
                close = difflib.get_close_matches(key, list(self.options), n=3, cutoff=0.5)
                known = ", ".join(self.options) or "none"
                hint = f"did you mean {', '.join(close)}?" if close else f"options: {known}"
                raise UserError(f"--option {key}: protocol {self.name!r} has no such option; {hint}")
            if value not in self.options[key]:
                raise UserError(f"--option {key}={value}: must be one of {', '.join(self.options[key])}")
            resolved[key] = value
        return resolved

    def metric_specs(self, options: Mapping[str, str]) -> list[MetricSpec]:
        """The declared metrics with their final names (``key`` and the rest unchanged)."""
        return [dataclasses.replace(m, name=m.name.format(**options)) for m in self.metrics]


def _finite(value: Any, where: str) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{where}: expected a number, got {type(value).__name__}")
    if not math.isfinite(float(value)):
        raise ValueError(f"{where}: value {float(value)} is not finite")
    return float(value)


def _per_image_rows(value: PerImage, split: str, metric: str, where: str) -> list[tuple[str, str, str, float]]:
    values = np.asarray(value.values, np.float64).reshape(-1)
    ids = [str(i) for i in value.image_ids]
    if len(ids) != len(values):
        raise ValueError(f"{where}: {len(ids)} image ids for {len(values)} per-image values")
    if len(set(ids)) != len(ids):
        raise ValueError(f"{where}: image ids are not unique")
    if not np.isfinite(values).all():
        raise ValueError(f"{where}: non-finite per-image values (leave undefined images out)")
    if len(values) and not math.isclose(float(values.mean()), value.value, rel_tol=PER_IMAGE_MEAN_RTOL,
                                        abs_tol=PER_IMAGE_MEAN_RTOL):
        raise ValueError(f"{where}: the per-image mean {values.mean()!r} is not the value {value.value!r}")
    return [(split, i, metric, float(v)) for i, v in zip(ids, values)]


class Protocol(ABC):
    """A protocol turns a fitted method and the dataset splits into metric values.

    Subclasses implement ``evaluate`` (values keyed by ``MetricSpec.key``, see the module
    docstring); callers use ``score``.
    """

    spec: ClassVar[ProtocolSpec]

    def __init__(self, options: Mapping[str, str] = {}) -> None:
        self.options = self.spec.resolve_options(options)

    @abstractmethod
    def evaluate(self, method: Any, splits: Mapping[str, Any], *, batch_size: int = 32, progress: bool = True,
                 device: Any = None) -> Mapping[str, MetricValue]:
        """One value per declared metric key; ``device`` (str or torch.device; None = the CPU, see
        ``protocol_device``) is where the protocol's own networks (FID's feature extractor) run."""

    def n_eval(self, splits: Mapping[str, Any]) -> int:
        """How many images each value is computed on: the scored split (FID: generated images)."""
        return len(splits[self.spec.scored_role])

    def score(self, method: Any, splits: Mapping[str, Any], *, batch_size: int = 32, progress: bool = True,
              device: Any = None) -> ProtocolScores:
        values = dict(self.evaluate(method, splits, batch_size=batch_size, progress=progress, device=device))
        metrics = self.spec.metric_specs(self.options)
        declared = [m.key for m in metrics]
        if set(values) != set(declared):
            raise ValueError(f"protocol {self.spec.name!r} returned metrics {sorted(values)}, declared "
                             f"{sorted(declared)}")
        split = getattr(splits[self.spec.scored_role], "name", None)
        n_eval = self.n_eval(splits)
        records, per_image = [], []
        for metric in metrics:
            value, where = values[metric.key], f"protocol {self.spec.name!r} metric {metric.name!r}"
            split_name = split or metric.split
            if isinstance(value, PerImage):
                per_image += _per_image_rows(value, split_name, metric.name, where)
                value = value.value
            records.append({"metric": metric.name, "split": split_name, "value": _finite(value, where),
                            "n_eval": n_eval})
        return ProtocolScores(records, per_image)
