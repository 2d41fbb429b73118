"""The interface every segmentation method implements.

A method receives unlabelled images for ``fit`` (structurally: ``FitImages`` yields image
tensors and nothing else) with a ``FitContext`` (device, seed, progress, stats, named places in
the run folder), and returns per-pixel part probabilities from ``predict``.
Everything derived from those probabilities (part centres, foreground, keypoints) is the
protocol's job, never the method's.
"""
from __future__ import annotations

import json
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Mapping

import torch

from segbench.benchmark.config import PRESET_NAMES, dumps, from_jsonable, resolve_config
from segbench.benchmark.errors import UserError
from segbench.methods.context import FitContext, write_json_atomic

PARTS = "parts"
SAMPLES = "samples"
PROB_SUM_ATOL = 1e-3


class PredictionError(ValueError):
    """A method returned something that breaks the Predictions contract."""


@dataclass
class Predictions:
    """``part_probs``: float ``[B, K+1, H, W]`` softmax probabilities, channel 0 = background."""

    part_probs: torch.Tensor

    @property
    def num_parts(self) -> int:
        return self.part_probs.shape[1] - 1

    def validate(self, images: torch.Tensor) -> "Predictions":
        p = self.part_probs
        b, _, h, w = images.shape
        if not isinstance(p, torch.Tensor) or p.dim() != 4:
            raise PredictionError(f"part_probs must be a 4-d tensor, got {type(p).__name__} "
                                  f"{tuple(getattr(p, 'shape', ()))}")
        if p.shape[0] != b or p.shape[2:] != (h, w):
            raise PredictionError(f"part_probs shape {tuple(p.shape)} does not match images "
                                  f"{tuple(images.shape)} (need [B, K+1, H, W] at input resolution)")
        if p.shape[1] < 2:
            raise PredictionError("part_probs needs a background channel and at least one part")
        if not p.is_floating_point() or not torch.isfinite(p).all():
            raise PredictionError("part_probs must be finite floats")
        if p.min() < -1e-6 or p.max() > 1 + 1e-6:
            raise PredictionError("part_probs must lie in [0, 1]")
        sums = p.sum(dim=1)
        if (sums - 1).abs().max() > PROB_SUM_ATOL:
            raise PredictionError("part_probs must sum to 1 over the channel dimension")
        return self


def validate_images(images: torch.Tensor) -> None:
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be a float tensor [B,3,H,W], got {tuple(getattr(images, 'shape', ()))}")
    if images.dtype != torch.float32:
        raise ValueError(f"images must be float32, got {images.dtype}")
    if images.numel() and (images.min() < 0 or images.max() > 1):
        raise ValueError("images must lie in [0, 1]")


class Method(ABC):
    """Base class of every method plugin.

    Subclasses set ``Config`` (a frozen dataclass whose defaults are the paper's values and
    which has a ``num_parts`` field), ``PRESETS`` (``paper``/``quick``/``smoke`` field
    overrides) and ``produces``; they implement ``fit`` and ``_predict`` and, when they
    produce samples, ``_sample``. Learned state goes through ``state_dict`` /
    ``load_state_dict`` as plain tensors so checkpoints load with ``weights_only=True``.

    Contract the conformance suite (``python -m benchmark check-plugin NAME``) checks: fit on
    images only; predictions valid, the same for a batch as for its images one by one, the
    same for the same seed and different for another; ``save``/``load`` round trip.
    """

    Config: ClassVar[type]
    PRESETS: ClassVar[Mapping[str, Mapping[str, Any]]]
    # Per-dataset values (dataset name -> field overrides) applied before any preset: the
    # authors' released per-dataset settings, so ``paper`` on CUB is the CUB configuration.
    DATASET_PRESETS: ClassVar[Mapping[str, Mapping[str, Any]]] = {}
    produces: ClassVar[frozenset[str]] = frozenset({PARTS})
    # Methods with a fixed K (foreground-only: 1) set it here; the runner then asks for that K
    # and refuses another one. Others take K from the protocol unless --set num_parts=...
    fixed_num_parts: ClassVar[int | None] = None
    # True for a method with no randomness at all (its fit and predictions do not depend on
    # the seed, e.g. a fixed prior): the conformance suite then checks that different seeds
    # give identical predictions, instead of different ones.
    deterministic: ClassVar[bool] = False
    # Config fields (dotted for nested configs) that ``run --resume DIR --set key=value`` may
    # change: the ones that do not change what a training snapshot means (step counts, logging
    # and snapshot intervals, learning rates to recover from a divergence). Every other field
    # is fixed for the life of a run folder.
    RESUMABLE_FIELDS: ClassVar[tuple[str, ...]] = ()
    # Config fields (dotted) holding global batch sizes that a data-parallel run (torchrun)
    # splits over its processes: the runner checks they divide by the world size before it makes
    # the run folder (the loops check again where they split).
    DATA_PARALLEL_BATCHES: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: Any | None = None) -> None:
        self.config = config if config is not None else self.Config()

    # ----- configuration -------------------------------------------------------------
    @classmethod
    def config_for(cls, preset: str = "paper", overrides: Mapping[str, Any] = {},
                   dataset: str | None = None) -> Any:
        """Defaults -> ``DATASET_PRESETS[dataset]`` (if any) -> ``PRESETS[preset]`` -> overrides."""
        missing = [p for p in PRESET_NAMES if p not in cls.PRESETS]
        if missing:
            raise TypeError(f"{cls.__name__}.PRESETS lacks {missing}")
        return resolve_config(cls.Config, cls.PRESETS, preset, overrides, cls.DATASET_PRESETS.get(dataset or "", {}))

    @property
    def num_parts(self) -> int:
        return int(self.config.num_parts)

    # ----- training and inference ----------------------------------------------------
    @abstractmethod
    def fit(self, train_images: torch.utils.data.Dataset, ctx: FitContext) -> None:
        """Unsupervised training on images only (each item a float [3,H,W] tensor in [0,1]).

        ``ctx`` gives the device, the seed, the progress switch, the run's ``StatsLog`` and the
        places a method may write to (``ctx.checkpoint_dir(stage)``, ``ctx.figures_dir``)."""

    @abstractmethod
    def _predict(self, images: torch.Tensor) -> torch.Tensor:
        """Return part probabilities [B, K+1, H, W] for images [B, 3, H, W] in [0, 1]."""

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> Predictions:
        validate_images(images)
        return Predictions(self._predict(images)).validate(images)

    def _sample(self, n: int, seed: int) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} does not generate samples")

    @torch.no_grad()
    def sample(self, n: int, *, seed: int) -> torch.Tensor:
        """``n`` generated images as uint8 [n, 3, H, W]."""
        if SAMPLES not in self.produces:
            raise NotImplementedError(f"{type(self).__name__} does not produce samples")
        out = self._sample(n, seed)
        if out.dtype != torch.uint8 or out.dim() != 4 or out.shape[:2] != (n, 3):
            raise PredictionError(f"sample() must return uint8 [n,3,H,W], got {out.dtype} {tuple(out.shape)}")
        return out

    # ----- persistence ---------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            raise ValueError(f"{type(self).__name__} has no state but got keys {sorted(state)}")

    def save(self, directory: Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = self.state_dict()
        bad = [k for k, v in state.items() if isinstance(v, torch.Tensor) and v.is_floating_point()
               and not torch.isfinite(v).all()]
        if bad:  # a checkpoint never holds non-finite weights
            raise FloatingPointError(f"{type(self).__name__}: non-finite values in {bad[:5]}; not saved")
        tmp = directory / ".state.pt.tmp"
        torch.save(state, tmp)
        os.replace(tmp, directory / "state.pt")
        write_json_atomic(directory / "method_config.json", json.loads(dumps(self.config)))

    @classmethod
    def load(cls, directory: Path) -> "Method":
        """The method saved in ``directory``. A missing, truncated or foreign ``method_config.json``
        or ``state.pt`` is a ``UserError`` naming the file (one line, exit 2), never a traceback."""
        from segbench.benchmark.errors import RunFileError, read_json_file

        directory = Path(directory)
        config_path, state_path = directory / "method_config.json", directory / "state.pt"
        data = read_json_file(config_path, f"the saved {cls.__name__} config")
        if not isinstance(data, dict):
            raise RunFileError(f"{config_path}: holds a {type(data).__name__}, not a {cls.__name__} config object")
        try:
            config = from_jsonable(cls.Config, data)
        except UserError as exc:
            raise RunFileError(f"{config_path}: {exc}") from None
        except (TypeError, ValueError, KeyError, AttributeError) as exc:
            raise RunFileError(f"{config_path}: does not fit {cls.__name__}.Config ({type(exc).__name__}: "
                               f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
        try:
            method = cls(config)
        except UserError as exc:
            raise RunFileError(f"{config_path}: {exc}") from None
        if not state_path.is_file():
            raise RunFileError(f"{state_path}: missing (the fitted {cls.__name__}'s weights)")
        try:
            state = torch.load(state_path, map_location="cpu", weights_only=True)
        except Exception as exc:  # truncated, random bytes or not a weights-only checkpoint
            raise RunFileError(f"{state_path}: unreadable checkpoint ({type(exc).__name__}); truncated or corrupt")\
                from None
        if not isinstance(state, dict):
            raise RunFileError(f"{state_path}: holds a {type(state).__name__}, not a state dict")
        try:
            method.load_state_dict(state)
        except UserError as exc:
            raise RunFileError(f"{state_path}: {exc}") from None
        except (RuntimeError, KeyError, ValueError, TypeError, AttributeError, IndexError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise RunFileError(f"{state_path}: does not match {cls.__name__} with {config_path.name} "
                               f"({type(exc).__name__}: {first[:200]})") from None
        return method
