"""The plugin API: everything a method, dataset or protocol plugin imports, and nothing else.

Stable names (their modules import nothing from the runner, the CLI or the tables, which
sit above this layer; tests/test_api.py checks that)::

    from segbench.api import Method, Predictions, FitContext, METHODS, UserError

- ``Method``, ``Predictions``, ``PredictionError``, ``PARTS``, ``SAMPLES``: the method contract.
- ``FitContext``, ``StatsLog``, ``final_checkpoint_dir``: what ``fit`` gets from the run.
- ``Snapshot``, ``run_steps``, ``StatsWindow``, ``TrainingDiverged``: the training-loop core
  (exact resume, divergence stops, stats rows) that every built-in loop uses.
- ``Registry``, ``UnknownNameError``, ``PluginLoadError``, ``METHODS``, ``DATASETS``,
  ``PROTOCOLS``: registries (entry-point groups ``segbench.methods`` / ``segbench.datasets`` /
  ``segbench.protocols``).
- ``Protocol``, ``ProtocolSpec``, ``MetricSpec``, ``PerImage``: the protocol contract (each
  metric declared once; ``evaluate`` returns values keyed by the specs' keys).
- ``Dataset``, ``Split``, ``SplitInfo``, ``FitImages``: the dataset contract (the fit view holds
  images only).
- ``UserError``: a failure the user can fix; the CLI prints its one line and exits 2.
- ``resolve_config``, ``PRESET_NAMES``, ``to_jsonable``, ``from_jsonable``, ``domain``,
  ``validate_config``: config helpers for frozen-dataclass configs with ``paper`` / ``quick`` /
  ``smoke`` presets (``domain(default, ge=0, ...)`` declares a field's allowed values, checked
  when the config is resolved).
"""
from __future__ import annotations

from segbench.benchmark.config import PRESET_NAMES, domain, from_jsonable, resolve_config, to_jsonable, validate_config
from segbench.benchmark.errors import UserError
from segbench.benchmark.registry import PluginLoadError, Registry, UnknownNameError
from segbench.datasets import DATASETS
from segbench.datasets.base import Dataset, FitImages, Split, SplitInfo
from segbench.methods import METHODS
from segbench.methods.base import PARTS, SAMPLES, Method, PredictionError, Predictions
from segbench.methods.common.loop import Snapshot, StatsWindow, TrainingDiverged, run_steps
from segbench.methods.context import FitContext, StatsLog, final_checkpoint_dir
from segbench.protocols import PROTOCOLS
from segbench.protocols.spec import MetricSpec, PerImage, Protocol, ProtocolSpec

__all__ = ["DATASETS", "METHODS", "PARTS", "PRESET_NAMES", "PROTOCOLS", "SAMPLES", "Dataset", "FitContext",
           "FitImages", "Method", "MetricSpec", "PerImage", "PluginLoadError", "PredictionError", "Predictions",
           "Protocol", "ProtocolSpec", "Registry", "Snapshot", "Split", "SplitInfo", "StatsLog", "StatsWindow",
           "TrainingDiverged",
           "UnknownNameError", "UserError", "final_checkpoint_dir", "from_jsonable",
           "resolve_config", "run_steps", "to_jsonable", "domain", "validate_config"]
