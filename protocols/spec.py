"""Protocol specs: what a protocol reproduces, which splits and outputs it needs, and the
metrics it emits. Metric names encode the protocol variant (``fg_iou_ganseg``), so a number
always says how it was computed.
"""
from __future__ import annotations

import difflib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping

from segbench.benchmark.errors import UserError


@dataclass(frozen=True)
class MetricSpec:
    """``name`` may hold ``{option}`` placeholders filled from the protocol's options."""

    name: str
    higher_is_better: bool
    split: str = "test"
    unit: str = ""
    description: str = ""


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
        return [MetricSpec(m.name.format(**options), m.higher_is_better, m.split, m.unit, m.description)
                for m in self.metrics]


class Protocol(ABC):
    """A protocol turns a fitted method and the dataset splits into metric values.

    ``evaluate`` returns plain dicts ``{"metric", "split", "value", "n_eval"}``; the runner
    adds the bookkeeping columns of the results schema.
    """

    spec: ClassVar[ProtocolSpec]

    def __init__(self, options: Mapping[str, str] = {}) -> None:
        self.options = self.spec.resolve_options(options)

    @abstractmethod
    def evaluate(self, method: Any, splits: Mapping[str, Any], *, batch_size: int = 32,
                 progress: bool = True) -> list[dict[str, Any]]:
        ...
