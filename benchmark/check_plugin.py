"""The shipped conformance suite: ``python -m benchmark check-plugin NAME``.

It runs one method (a registered name, or a ``"module:Class"`` target that is not registered)
through the contract every method keeps, on the embedded ``synthetic_parts`` data, and says
PASS / FAIL / SKIP (not applicable, or not run because fit failed) per check, with why:

    config       ``Config`` is a frozen dataclass with ``num_parts``; presets paper/quick/smoke
                 resolve (paper = the defaults); ``fixed_num_parts`` holds in every preset
    fit          fit at preset ``smoke`` on a few ``synthetic_parts`` images (a temporary run
                 folder, progress off, device cpu unless ``--device``)
    predictions  ``predict`` keeps the ``Predictions`` contract ([B, K+1, H, W] probabilities
                 at the input resolution, K = the config's num_parts) and rejects bad inputs
    protocol     scored through the ``synthetic_parts`` protocol on a small test split: every
                 declared metric comes back, finite
    batch        a batch's predictions equal its images' one at a time (max |diff| <= 1e-4),
                 and predicting twice gives the same result (eval mode, no dropout)
    seed         two fits with the same seed predict the same; another seed predicts
                 differently (a method with ``deterministic = True``: the same)
    save_load    ``save`` (no temporary files left) then ``load`` predicts (and samples) the same
    no_labels    no ``Split``, ``Dataset`` or object with an ``annotation`` method is reachable
                 from what ``fit`` is given (attributes, slots, closures, bound methods,
                 partials, containers)
    samples      methods that produce samples: ``sample(n, seed=s)`` is uint8 [n, 3, H, W], the
                 same for the same seed and different for another

A run fits three times (seed 0 twice, seed 1 once) and reuses those fits across checks. The
library side (``PluginHarness``, ``run_check``, ``run_checks``) is what tests/test_conformance.py
runs over every registered method.
"""
from __future__ import annotations

import dataclasses
import random
import tempfile
import time
import types
from dataclasses import dataclass, field
from functools import cached_property, partial
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np
import torch

from segbench.benchmark.config import PRESET_NAMES
from segbench.benchmark.errors import UserError
from segbench.benchmark.registry import load_target
from segbench.datasets import DATASETS
from segbench.methods import METHODS
from segbench.methods.base import PARTS, SAMPLES, Method, Predictions
from segbench.methods.context import FitContext, resolve_device
from segbench.protocols import PROTOCOLS

PROTOCOL = "synthetic_parts"
PRESET = "smoke"
DEFAULT_LIMIT = 12  # images per split (fit, regression_fit, test)
N_CHECK_IMAGES = 4  # test images of the predictions / batch / seed / save_load checks
N_SAMPLES = 3
BATCH_ATOL = 1e-4  # batch vs one at a time
SAME_ATOL = 1e-6  # "identical": same seed, save/load, predicting twice
DIFFERENT_ATOL = 1e-4  # "different": another seed must move some output by more than this
WALK_MAX_DEPTH = 24
WALK_MAX_OBJECTS = 200_000

PASS, FAIL, SKIP = "PASS", "FAIL", "SKIP"
CHECKS = ("config", "fit", "predictions", "protocol", "batch", "seed", "save_load", "no_labels", "samples")


class CheckFailed(Exception):
    """A check's one-line reason for failing."""


class CheckSkipped(Exception):
    """A check that does not apply (or could not run); the one-line reason why."""


@dataclass(frozen=True)
class CheckResult:
    check: str
    status: str  # PASS, FAIL or SKIP
    detail: str
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status != FAIL

    def line(self) -> str:
        return f"{self.status}  {self.check:<11} {self.detail}"


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    if a.shape != b.shape:
        return float("inf")
    if a.numel() == 0:
        return 0.0
    return float((a.detach().double().cpu() - b.detach().double().cpu()).abs().max())


def seed_everything(seed: int) -> None:
    """What the runner does before ``fit`` (the global generators), so a check fits as a run does."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_method(name_or_target: str) -> tuple[str, type]:
    """A registered method name, or ``"module:Class"`` -> (label, class). Anything that cannot be
    loaded is a ``UserError`` (one line)."""
    if ":" in name_or_target:
        cls = load_target(name_or_target, kind="method")
    else:
        cls = METHODS.get(name_or_target)
    if not (isinstance(cls, type) and issubclass(cls, Method)):
        raise UserError(f"{name_or_target!r} is {cls!r}, not a subclass of segbench.api.Method")
    return name_or_target, cls


# ----- the label walk (check no_labels) --------------------------------------------------------
_LEAVES = (type(None), bool, int, float, complex, str, bytes, bytearray, range, slice, Path, torch.Tensor,
           torch.dtype, torch.device, np.generic, types.ModuleType, type, types.BuiltinFunctionType,
           types.CodeType, types.FrameType)


def _children(obj: Any) -> Iterator[tuple[str, Any]]:
    """(path step, child) for what ``obj`` holds: container items, closure cells, defaults and the
    module globals a function's code names, bound-method parts, partial arguments, ``__dict__``
    and ``__slots__`` attributes. Modules and classes are not entered."""
    if isinstance(obj, dict):
        for key, value in list(obj.items()):
            yield f"[{key!r}]", value
            if not isinstance(key, _LEAVES):
                yield f".keys()<{key!r}>", key
        return
    if isinstance(obj, (list, tuple, set, frozenset)) or type(obj).__name__ == "deque":
        for i, value in enumerate(list(obj)):
            yield f"[{i}]", value
        return
    if isinstance(obj, np.ndarray):
        if obj.dtype == object:
            for i, value in enumerate(obj.reshape(-1)[:10_000]):
                yield f"[{i}]", value
        return
    if isinstance(obj, partial):
        yield ".func", obj.func
        for i, value in enumerate(obj.args):
            yield f".args[{i}]", value
        for key, value in (obj.keywords or {}).items():
            yield f".keywords[{key!r}]", value
    if isinstance(obj, types.MethodType):
        yield ".__self__", obj.__self__
        yield ".__func__", obj.__func__
    if isinstance(obj, types.FunctionType):
        for var, cell in zip(obj.__code__.co_freevars, obj.__closure__ or ()):
            try:
                yield f".<closure {var}>", cell.cell_contents
            except ValueError:  # an empty cell
                pass
        for i, value in enumerate(obj.__defaults__ or ()):
            yield f".__defaults__[{i}]", value
        for key, value in (obj.__kwdefaults__ or {}).items():
            yield f".__kwdefaults__[{key!r}]", value
        module_globals = obj.__globals__  # only the globals its code names (not the whole module)
        for global_name in obj.__code__.co_names:
            if global_name in module_globals:
                yield f".__globals__[{global_name!r}]", module_globals[global_name]
    self_of = getattr(obj, "__self__", None)  # bound built-ins, method-wrappers
    if self_of is not None and not isinstance(obj, types.MethodType):
        yield ".__self__", self_of
    try:
        attrs = object.__getattribute__(obj, "__dict__")
    except AttributeError:
        attrs = None
    if isinstance(attrs, dict):
        for key, value in list(attrs.items()):
            yield f".{key}", value
    for klass in type(obj).__mro__:
        slots = klass.__dict__.get("__slots__", ())
        for slot in (slots,) if isinstance(slots, str) else slots:
            if slot in ("__dict__", "__weakref__"):
                continue
            try:
                yield f".{slot}", object.__getattribute__(obj, slot)
            except AttributeError:  # an unset slot
                pass


def _labelled(obj: Any) -> str:
    """Why ``obj`` exposes labels ("" when it does not)."""
    from segbench.datasets.base import Dataset, Split

    if isinstance(obj, Split):
        return f"a {type(obj).__name__} (a Split)"
    if isinstance(obj, Dataset):
        return f"a {type(obj).__name__} (a Dataset)"
    try:
        annotation = getattr(obj, "annotation", None)
    except Exception:  # noqa: BLE001 (a property that raises is not an annotation method)
        annotation = None
    if annotation is not None and callable(annotation):
        return f"a {type(obj).__name__} with an annotation() method"
    return ""


def find_label_path(root: Any, root_name: str = "fit images", max_depth: int = WALK_MAX_DEPTH,
                    max_objects: int = WALK_MAX_OBJECTS) -> tuple[str | None, int]:
    """Walk everything reachable from ``root`` (depth-first, each object once, at most
    ``max_depth`` steps deep and ``max_objects`` objects): the first "<path> reaches <what>"
    found, or None, and the number of objects visited."""
    seen: set[int] = set()
    keep: list[Any] = []  # children made on the fly (bound methods) stay alive: ids stay unique
    stack: list[tuple[Any, str, int]] = [(root, root_name, 0)]
    while stack and len(seen) < max_objects:
        obj, path, depth = stack.pop()
        if id(obj) in seen or isinstance(obj, _LEAVES):
            continue
        seen.add(id(obj))
        keep.append(obj)
        what = _labelled(obj)
        if what:
            return f"{path} reaches {what}", len(seen)
        if depth >= max_depth:
            continue
        try:
            children = list(_children(obj))
        except Exception:  # noqa: BLE001 (an object that cannot be looked into holds nothing we can see)
            continue
        for step, child in reversed(children):
            if not isinstance(child, _LEAVES) and id(child) not in seen:
                stack.append((child, path + step, depth + 1))
    return None, len(seen)


# ----- the harness: one method class, its data and its (cached) fits ---------------------------
@dataclass
class PluginHarness:
    """One method class under test: the ``synthetic_parts`` data, its fits (cached per seed and
    copy, so every check reuses them) and a work folder for run folders and checkpoints."""

    method_cls: type
    name: str
    work_dir: Path
    device: str = "cpu"
    limit: int = DEFAULT_LIMIT
    num_threads: int = 0  # FitContext.num_threads (0 = leave the process setting)
    overrides: Mapping[str, Any] = field(default_factory=dict)
    batch_size: int = 32
    protocol_name: str = PROTOCOL
    fit_seconds: dict[tuple[int, int], float] = field(default_factory=dict)
    _fits: dict[tuple[int, int], Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.work_dir = Path(self.work_dir)
        self.device = str(resolve_device(self.device))  # an absent CUDA device: one line, exit 2

    @cached_property
    def protocol(self) -> Any:
        cls = PROTOCOLS.get(self.protocol_name)
        return cls(cls.spec.smoke_options)

    @property
    def spec(self) -> Any:
        return self.protocol.spec

    @cached_property
    def dataset(self) -> Any:
        spec = self.spec
        return DATASETS.get(spec.dataset)(root=None, image_size=spec.image_size, **spec.dataset_options)

    def split(self, role: str) -> Any:
        return self.dataset.split(self.spec.splits[role], limit=self.limit)

    @cached_property
    def fit_images(self) -> Any:
        """The one object every fit is given (and the no_labels check walks)."""
        return self.split("fit").fit_images()

    @cached_property
    def images(self) -> torch.Tensor:
        """A few test images, float [N, 3, H, W] in [0, 1]."""
        from segbench.datasets.base import to_tensor

        test = self.split("test")
        return torch.stack([to_tensor(test.image(i)) for i in range(min(N_CHECK_IMAGES, len(test)))])

    def config(self) -> Any:
        """As the runner resolves it: preset smoke, the protocol's K unless the method fixes K."""
        cls, overrides = self.method_cls, dict(self.overrides)
        fixed = cls.fixed_num_parts
        if fixed is not None:
            if "num_parts" in overrides and str(overrides["num_parts"]).strip() != str(fixed):
                raise UserError(f"--set num_parts={overrides['num_parts']}: {self.name} always has num_parts={fixed}")
            overrides["num_parts"] = fixed
        else:
            overrides.setdefault("num_parts", self.spec.num_parts)
        return cls.config_for(PRESET, overrides, dataset=self.spec.dataset)

    def fitted(self, seed: int = 0, copy: int = 0) -> Any:
        """The method fitted with ``seed`` (``copy`` > 0: another, independent fit with it)."""
        key = (seed, copy)
        if key not in self._fits:
            try:
                method = self.method_cls(self.config())
                ctx = FitContext(seed=seed, device=self.device, progress=False, num_threads=self.num_threads,
                                 run_dir=self.work_dir / f"fit_seed{seed}_{copy}")
                seed_everything(seed)
                t0 = time.perf_counter()
                method.fit(self.fit_images, ctx)
                self.fit_seconds[key] = time.perf_counter() - t0
                self._fits[key] = method
            except Exception as exc:  # noqa: BLE001 (the plugin's fit may fail in any way)
                self._fits[key] = exc
        result = self._fits[key]
        if isinstance(result, Exception):
            if key == (0, 0):  # check "fit" reports it; the others were not run
                raise CheckSkipped(f"not run: fit failed ({_one_line(result)})")
            raise CheckFailed(f"fit with seed {seed} (fit #{copy + 1}) raised {_one_line(result)}")
        return result

    def fit_error(self, seed: int = 0, copy: int = 0) -> Exception | None:
        try:
            self.fitted(seed, copy)
        except (CheckSkipped, CheckFailed):
            return self._fits[(seed, copy)]
        return None

    def outputs(self, method: Any) -> dict[str, torch.Tensor]:
        """What a method produces on the check images: part probabilities and/or samples."""
        out = {}
        if PARTS in method.produces:
            out["predictions"] = method.predict(self.images).part_probs
        if SAMPLES in method.produces:
            out["samples"] = method.sample(N_SAMPLES, seed=0)
        return out


# ----- the checks --------------------------------------------------------------------------
def check_config(h: PluginHarness) -> str:
    cls = h.method_cls
    if not (isinstance(cls, type) and issubclass(cls, Method)):
        raise CheckFailed(f"{cls!r} is not a subclass of segbench.api.Method")
    config_cls = getattr(cls, "Config", None)
    if not (isinstance(config_cls, type) and dataclasses.is_dataclass(config_cls)):
        raise CheckFailed(f"{cls.__name__}.Config must be a dataclass, got {config_cls!r}")
    if not config_cls.__dataclass_params__.frozen:
        raise CheckFailed(f"{cls.__name__}.Config must be a frozen dataclass (@dataclass(frozen=True))")
    if "num_parts" not in {f.name for f in dataclasses.fields(config_cls)}:
        raise CheckFailed(f"{cls.__name__}.Config has no num_parts field")
    presets = getattr(cls, "PRESETS", None)
    missing = [p for p in PRESET_NAMES if not isinstance(presets, Mapping) or p not in presets]
    if missing:
        raise CheckFailed(f"{cls.__name__}.PRESETS lacks {', '.join(missing)} (needs {', '.join(PRESET_NAMES)})")
    try:
        defaults = config_cls()
    except Exception as exc:  # noqa: BLE001
        raise CheckFailed(f"{cls.__name__}.Config() raised {_one_line(exc)}: every field needs a default") from None
    configs = {}
    for preset in presets:
        try:
            configs[preset] = cls.config_for(preset)
        except Exception as exc:  # noqa: BLE001
            raise CheckFailed(f"preset {preset!r} does not resolve: {_one_line(exc)}") from None
        if not isinstance(configs[preset], config_cls):
            raise CheckFailed(f"preset {preset!r} resolves to {type(configs[preset]).__name__}, not {config_cls.__name__}")
    fixed = cls.fixed_num_parts
    if fixed is not None:
        wrong = {p: c.num_parts for p, c in {"Config()": defaults, **configs}.items() if c.num_parts != fixed}
        if wrong:
            raise CheckFailed(f"fixed_num_parts={fixed} but num_parts is {wrong}")
    if configs["paper"] != defaults:
        raise CheckFailed("preset 'paper' differs from Config(): the defaults must be the paper's values")
    produces = getattr(cls, "produces", None)
    if not isinstance(produces, (set, frozenset)) or not produces or not produces <= {PARTS, SAMPLES}:
        raise CheckFailed(f"produces must be a non-empty subset of {{{PARTS!r}, {SAMPLES!r}}}, got {produces!r}")
    if not isinstance(getattr(cls, "deterministic", False), bool):
        raise CheckFailed(f"deterministic must be a bool, got {cls.deterministic!r}")
    k = f"fixed num_parts={fixed}" if fixed is not None else "num_parts from the protocol"
    return (f"frozen {config_cls.__name__} with num_parts; presets {', '.join(presets)} resolve, paper = defaults; "
            f"{k}; produces {', '.join(sorted(produces))}")


def check_fit(h: PluginHarness) -> str:
    try:
        config = h.config()
    except Exception as exc:  # noqa: BLE001
        raise CheckFailed(f"preset {PRESET!r} does not resolve for {h.spec.dataset}: {_one_line(exc)}") from None
    error = h.fit_error(0)
    if error is not None:
        raise CheckFailed(f"fit raised {_one_line(error)}")
    k = getattr(config, "num_parts", "?")
    return (f"preset {PRESET} (num_parts={k}) on {len(h.fit_images)} {h.spec.dataset} images at "
            f"{h.spec.image_size} px, seed 0, device {h.device}: {h.fit_seconds[(0, 0)]:.1f} s")


def check_predictions(h: PluginHarness) -> str:
    method = h.fitted(0)
    if PARTS not in method.produces:
        raise CheckSkipped("produces no part predictions")
    images = h.images
    try:
        probs = method.predict(images).part_probs
        Predictions(probs).validate(images)
    except Exception as exc:  # noqa: BLE001
        raise CheckFailed(f"predict on {tuple(images.shape)}: {_one_line(exc)}") from None
    k = int(method.config.num_parts)
    if method.num_parts != k or probs.shape[1] != k + 1:
        raise CheckFailed(f"config num_parts={k} but predictions have {probs.shape[1]} channels (need K+1 = {k + 1})")
    for bad, what in [((images * 255).to(torch.uint8), "uint8 images"), (images[:, :2], "2-channel images")]:
        try:
            method.predict(bad)
        except ValueError:
            continue
        except Exception as exc:  # noqa: BLE001
            raise CheckFailed(f"predict on {what} raised {_one_line(exc)}, expected a ValueError") from None
        raise CheckFailed(f"predict accepted {what} (must raise ValueError)")
    return f"[{probs.shape[0]}, {k}+1, {probs.shape[2]}, {probs.shape[3]}] probabilities sum to 1; bad inputs rejected"


def check_protocol(h: PluginHarness) -> str:
    method = h.fitted(0)
    missing = set(h.spec.needs) - set(method.produces)
    if missing:
        raise CheckSkipped(f"protocol {h.spec.name} needs {', '.join(sorted(missing))}")
    splits = {role: h.split(role) for role in h.spec.splits if role != "fit"}
    try:
        scores = h.protocol.score(method, splits, batch_size=h.batch_size, progress=False, device=h.device)
    except Exception as exc:  # noqa: BLE001
        raise CheckFailed(f"scoring through {h.spec.name} raised {_one_line(exc)}") from None
    bad = [r["metric"] for r in scores.records if not np.isfinite(r["value"])]
    if bad:
        raise CheckFailed(f"non-finite metrics: {', '.join(bad)}")
    values = ", ".join(f"{r['metric']}={r['value']:.4g}" for r in scores.records)
    return f"{h.spec.name} v{h.spec.version} on {len(splits[h.spec.scored_role])} test images: {values}"


def check_batch(h: PluginHarness) -> str:
    method = h.fitted(0)
    if PARTS not in method.produces:
        raise CheckSkipped("produces no part predictions")
    images = h.images
    batch = method.predict(images).part_probs
    again = method.predict(images).part_probs
    singles = torch.cat([method.predict(images[i:i + 1]).part_probs for i in range(len(images))])
    diff = _max_diff(batch, singles)
    if diff > BATCH_ATOL:
        raise CheckFailed(f"a batch of {len(images)} predicts differently from its images one at a time "
                          f"(max |diff| {diff:.3g} > {BATCH_ATOL:g}): predictions must not depend on the other "
                          "images of the batch (batch statistics, BatchNorm in train mode?)")
    repeat = _max_diff(batch, again)
    if repeat > SAME_ATOL:
        raise CheckFailed(f"predicting the same batch twice differs (max |diff| {repeat:.3g}): predict must be "
                          "deterministic (eval mode, no dropout or unseeded noise)")
    return f"batch of {len(images)} = one at a time (max |diff| {diff:.2g}); predicting twice is identical"


def check_seed(h: PluginHarness) -> str:
    first = h.fitted(0)
    again, other = h.fitted(0, copy=1), h.fitted(1)
    a, b, c = h.outputs(first), h.outputs(again), h.outputs(other)
    same = {k: _max_diff(a[k], b[k]) for k in a}
    if max(same.values(), default=0.0) > SAME_ATOL:
        worst = max(same, key=same.get)
        raise CheckFailed(f"two fits with seed 0 give different {worst} (max |diff| {same[worst]:.3g}): fit must "
                          "draw all its randomness from ctx.seed (seed your generators with it)")
    moved = {k: _max_diff(a[k], c[k]) for k in a}
    if h.method_cls.deterministic:
        if max(moved.values(), default=0.0) > SAME_ATOL:
            worst = max(moved, key=moved.get)
            raise CheckFailed(f"deterministic = True, but seeds 0 and 1 give different {worst} "
                              f"(max |diff| {moved[worst]:.3g})")
        return "deterministic method: seeds 0, 0 and 1 give identical outputs"
    primary = "predictions" if "predictions" in a else "samples"
    if moved[primary] <= DIFFERENT_ATOL:
        raise CheckFailed(f"seeds 0 and 1 give the same {primary} (max |diff| {moved[primary]:.3g} <= "
                          f"{DIFFERENT_ATOL:g}): fit ignores ctx.seed (or set deterministic = True on a method "
                          "without randomness)")
    return (f"same seed identical ({', '.join(a)}); seed 1 differs (max |diff| of {primary} "
            f"{moved[primary]:.3g})")


def check_save_load(h: PluginHarness) -> str:
    method = h.fitted(0)
    directory = h.work_dir / "save_load"
    try:
        method.save(directory)
    except Exception as exc:  # noqa: BLE001
        raise CheckFailed(f"save raised {_one_line(exc)}") from None
    leftovers = sorted(p.name for p in directory.rglob("*") if p.name.endswith(".tmp"))
    if leftovers:
        raise CheckFailed(f"save left temporary files {leftovers}: write through a temporary name and os.replace")
    try:
        loaded = type(method).load(directory)
    except Exception as exc:  # noqa: BLE001
        raise CheckFailed(f"load raised {_one_line(exc)}") from None
    if loaded.config != method.config:
        raise CheckFailed("the loaded config differs from the saved one")
    before, after = h.outputs(method), h.outputs(loaded)
    diffs = {k: _max_diff(before[k], after[k]) for k in before}
    bad = {k: v for k, v in diffs.items() if v > SAME_ATOL}
    if bad:
        raise CheckFailed("after save/load " + ", ".join(f"{k} differ (max |diff| {v:.3g})" for k, v in bad.items())
                          + ": state_dict must hold all fitted state")
    files = sorted(p.name for p in directory.iterdir())
    return f"saved {', '.join(files)}; loaded {', '.join(before) or 'method'} identical"


def check_no_labels(h: PluginHarness) -> str:
    found, visited = find_label_path(h.fit_images, type(h.fit_images).__name__)
    if found:
        raise CheckFailed(f"{found}: the object given to fit must hold images only")
    return (f"{visited} objects reachable from {type(h.fit_images).__name__}: no Split, Dataset or "
            "annotation() among them")


def check_samples(h: PluginHarness) -> str:
    if SAMPLES not in h.method_cls.produces:
        method = h.fitted(0)
        try:
            method.sample(2, seed=0)
        except NotImplementedError:
            raise CheckSkipped("produces no samples (sample raises NotImplementedError)") from None
        except Exception as exc:  # noqa: BLE001
            raise CheckFailed(f"sample on a method without samples raised {_one_line(exc)}, expected "
                              "NotImplementedError") from None
        raise CheckFailed("produces no samples but sample() returned something")
    method = h.fitted(0)
    try:
        a, b, c = (method.sample(N_SAMPLES, seed=s) for s in (1, 1, 2))
    except Exception as exc:  # noqa: BLE001
        raise CheckFailed(f"sample raised {_one_line(exc)}") from None
    if a.dtype != torch.uint8 or a.dim() != 4 or tuple(a.shape[:2]) != (N_SAMPLES, 3):
        raise CheckFailed(f"sample({N_SAMPLES}) must be uint8 [{N_SAMPLES}, 3, H, W], got {a.dtype} {tuple(a.shape)}")
    if not torch.equal(a, b):
        raise CheckFailed("sample with the same seed differs: draw from a generator seeded with `seed`")
    if torch.equal(a, c):
        raise CheckFailed("sample with seeds 1 and 2 is identical: the seed argument is ignored")
    return f"uint8 {list(a.shape)}; same seed identical, another seed differs"


CHECK_FUNCTIONS: dict[str, Callable[[PluginHarness], str]] = {
    "config": check_config, "fit": check_fit, "predictions": check_predictions, "protocol": check_protocol,
    "batch": check_batch, "seed": check_seed, "save_load": check_save_load, "no_labels": check_no_labels,
    "samples": check_samples,
}
assert tuple(CHECK_FUNCTIONS) == CHECKS


def run_check(h: PluginHarness, check: str) -> CheckResult:
    t0 = time.perf_counter()
    try:
        detail, status = CHECK_FUNCTIONS[check](h), PASS
    except CheckSkipped as exc:
        detail, status = str(exc), SKIP
    except CheckFailed as exc:
        detail, status = str(exc), FAIL
    except Exception as exc:  # noqa: BLE001 (anything else a plugin raises is its failure)
        detail, status = f"raised {_one_line(exc)}", FAIL
    return CheckResult(check, status, " ".join(detail.split()), time.perf_counter() - t0)


def run_checks(h: PluginHarness, checks: tuple[str, ...] = CHECKS) -> Iterator[CheckResult]:
    for check in checks:
        yield run_check(h, check)


def check_plugin(name_or_target: str, *, device: str = "cpu", limit: int = DEFAULT_LIMIT,
                 overrides: Mapping[str, Any] = {}, num_threads: int = 0, work_dir: Path | None = None,
                 echo: Callable[[str], None] | None = print) -> list[CheckResult]:
    """Run every check on one method; ``echo`` gets one line per check as it finishes.
    ``num_threads`` > 0: torch CPU threads for the whole check (fits and predictions)."""
    from segbench.methods.common.runtime import torch_threads

    label, cls = resolve_method(name_or_target)
    if limit < 2:
        raise UserError(f"--limit {limit}: need at least 2 images per split")
    if num_threads < 0:
        raise UserError(f"--threads {num_threads}: must be 0 (the default) or more")
    with tempfile.TemporaryDirectory(prefix="segbench-check-") as tmp, torch_threads(num_threads):
        h = PluginHarness(cls, label, Path(work_dir) if work_dir else Path(tmp), device=device, limit=limit,
                          overrides=overrides, num_threads=num_threads)
        if overrides:  # a bad --set is the user's mistake (one line, exit 2), not a failed check
            try:
                h.config()
            except UserError:
                raise
            except Exception:  # noqa: BLE001 (the plugin's own config trouble: check "config" says it)
                pass
        if echo:
            target = f"{cls.__module__}:{cls.__qualname__}"
            where = "" if target == label else f" ({target})"
            echo(f"check-plugin {label}{where}: preset {PRESET}, {h.protocol_name} x {limit} images per split, "
                 f"device {h.device}")
        results = []
        for result in run_checks(h):
            results.append(result)
            if echo:
                echo(result.line())
    return results
