"""Frozen-dataclass configs: named presets and typed ``key=value`` overrides.

A method's ``Config`` is a frozen dataclass whose defaults are the paper's values. Presets
are plain dicts of field overrides (``PRESETS = {"paper": {}, "quick": {...}, "smoke": {...}}``)
so every number is findable with one grep. Nested dataclass fields take dotted keys
(``generator.run=...``).

Validation (``validate_config``, run by ``resolve_config`` after the overrides, so ``--dry-run``
checks everything a run would): every field's value must fit its annotation (int, float, bool,
str, ``Literal`` choices, ``tuple[X, Y]`` of that length / ``tuple[X, ...]`` of at least one item,
``Optional``), float fields must be finite, and a field declared with ``domain(default, ge=..,
gt=.., le=.., lt=.., choices=.., finite=.., min_len=..)`` (plain ``dataclasses.field`` metadata,
bounds apply to each item of a tuple) must lie in that domain. Nested config dataclasses are
checked recursively; ``check_domains`` gives domains to fields of classes one cannot annotate.
A config class may add cross-field rules in a ``validate(self)`` method (``validate(self, prefix)``
to name its fields when nested), called after the field checks. A violation is one ``UserError``
line naming the dotted field, its value and the allowed domain:
``segmenter.steps=-5: must be an integer >= 0``.
"""
from __future__ import annotations

import dataclasses
import difflib
import inspect
import json
import math
import numbers
import types
import typing
from typing import Any, Literal, Mapping, Union

from segbench.benchmark.errors import UserError

PRESET_NAMES = ("paper", "quick", "smoke")
MAX_PARTS = 64  # num_parts above this is a typo, not a segmentation (and would allocate K-sized maps)
DOMAIN_KEYS = ("ge", "gt", "le", "lt", "choices", "finite", "min_len", "max_len")


def domain(default: Any = dataclasses.MISSING, *, default_factory: Any = dataclasses.MISSING,
           **limits: Any) -> Any:
    """A dataclass field with a domain, e.g. ``steps: int = domain(1000, ge=0)``,
    ``lr: float = domain(1e-4, gt=0)``, ``betas: tuple[float, float] = domain((0.5, 0.9), ge=0, lt=1)``.
    Keys: ``ge gt le lt`` (numeric bounds; each item of a tuple), ``choices`` (allowed values),
    ``finite`` (floats: default True), ``min_len`` / ``max_len`` (tuples)."""
    unknown = set(limits) - set(DOMAIN_KEYS)
    if unknown:
        raise TypeError(f"domain() got unknown keys {sorted(unknown)}; known: {', '.join(DOMAIN_KEYS)}")
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=limits)
    return dataclasses.field(default=default, metadata=limits)


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def parse_value(text: str, annotation: Any, key: str) -> Any:
    """Parse ``text`` as a value of type ``annotation``; raise UserError if it does not fit."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (Union, types.UnionType):
        if type(None) in args and text.lower() in ("none", "null", ""):
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return parse_value(text, arg, key)
            except UserError as exc:
                errors.append(str(exc))
        raise UserError(f"--set {key}={text}: not a valid {annotation}")
    if origin is Literal:
        for choice in args:
            if str(choice) == text:
                return choice
        raise UserError(f"--set {key}={text}: must be one of {', '.join(map(str, args))}")
    if origin in (tuple, list):
        items = [t for t in text.replace("(", "").replace(")", "").split(",") if t.strip()]
        if origin is tuple and args and args[-1] is not Ellipsis:  # fixed length: tuple[float, float]
            if len(items) != len(args):
                names = ", ".join(getattr(a, "__name__", str(a)) for a in args)
                raise UserError(f"--set {key}={text}: expected {len(args)} comma-separated values ({names}), "
                                f"got {len(items)}")
            return tuple(parse_value(t.strip(), a, key) for t, a in zip(items, args))
        item_type = args[0] if args else str
        return tuple(parse_value(t.strip(), item_type, key) for t in items)
    if annotation is bool:
        low = text.lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise UserError(f"--set {key}={text}: expected a bool (true/false)")
    if annotation in (int, float):
        try:
            value = annotation(text)
        except ValueError:
            raise UserError(f"--set {key}={text}: expected {annotation.__name__}") from None
        return value
    if annotation is str:
        return text
    raise UserError(f"--set {key}: fields of type {annotation} cannot be set from the command line")


def _replace_path(config: Any, path: list[str], value: Any) -> Any:
    name = path[0]
    if len(path) == 1:
        return dataclasses.replace(config, **{name: value})
    return dataclasses.replace(config, **{name: _replace_path(getattr(config, name), path[1:], value)})


def _lookup_type(cls: type, path: list[str], full_key: str) -> Any:
    hints = _field_types(cls)
    name = path[0]
    if name not in hints or name not in {f.name for f in dataclasses.fields(cls)}:
        known = sorted(f.name for f in dataclasses.fields(cls))
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}?" if close else f"known: {', '.join(known)}"
        raise UserError(f"--set {full_key}: unknown config key {name!r} for {cls.__name__}; {hint}")
    annotation = hints[name]
    if len(path) == 1:
        return annotation
    if not dataclasses.is_dataclass(annotation):
        raise UserError(f"--set {full_key}: {name!r} has no sub-keys")
    return _lookup_type(annotation, path[1:], full_key)


def apply_overrides(config: Any, overrides: Mapping[str, Any]) -> Any:
    """Return ``config`` with ``overrides`` applied. Values that are strings are parsed by
    the field's annotation; other values are taken as they are (presets)."""
    for key, raw in overrides.items():
        path = key.split(".")
        annotation = _lookup_type(type(config), path, key)
        value = parse_value(raw, annotation, key) if isinstance(raw, str) and annotation is not str else raw
        config = _replace_path(config, path, value)
    return config


def parse_set_args(items: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"--set expects key=value, got {item!r}")
        out[key.strip()] = value.strip()
    return out


def resolve_config(config_cls: type, presets: Mapping[str, Mapping[str, Any]], preset: str,
                   overrides: Mapping[str, Any] = {}, dataset_values: Mapping[str, Any] = {}) -> Any:
    """Defaults (the paper's values) -> the dataset's values (the released per-dataset settings)
    -> named preset -> user overrides."""
    if preset not in presets:
        close = difflib.get_close_matches(preset, list(presets), n=3, cutoff=0.4)
        hint = f"did you mean {', '.join(close)}?" if close else f"known: {', '.join(presets)}"
        raise UserError(f"unknown preset {preset!r}; {hint}")
    config = apply_overrides(config_cls(), dataset_values)
    config = apply_overrides(config, presets[preset])
    config = apply_overrides(config, overrides)
    validate_config(config)
    return config


# ----------------------------------------------------------------------------- validation

def _type_hints(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except Exception:  # noqa: BLE001 (a local class whose annotations do not resolve: check what we can)
        return {f.name: f.type for f in dataclasses.fields(cls) if not isinstance(f.type, str)}


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        return "(" + ",".join(_show(v) for v in value) + ")"
    return repr(value) if isinstance(value, (float, str)) else str(value)


def _type_name(annotation: Any) -> str:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Literal:
        return "one of " + ", ".join(map(str, args))
    if origin in (Union, types.UnionType):
        return " or ".join("None" if a is type(None) else _type_name(a) for a in args)
    if origin is tuple:
        if args and args[-1] is Ellipsis:
            return f"a tuple of {_type_name(args[0])} values"
        return f"a tuple of {len(args)} values ({', '.join(_type_name(a) for a in args)})"
    if annotation is int:
        return "an integer"
    if annotation is float:
        return "a number"
    if annotation is bool:
        return "true/false"
    if annotation is str:
        return "a string"
    return getattr(annotation, "__name__", str(annotation))


def _fits(value: Any, annotation: Any) -> bool | None:
    """Whether ``value`` has the annotated type (None: an annotation this checker does not know)."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is Any:
        return True
    if origin is Literal:
        return value in args and type(value) in {type(a) for a in args}
    if origin in (Union, types.UnionType):
        results = [_fits(value, a) for a in args]
        return True if any(r is True for r in results) else (None if None in results else False)
    if annotation is type(None):
        return value is None
    if origin is tuple:
        if not isinstance(value, tuple):
            return False
        if args and args[-1] is Ellipsis:
            return all(_fits(v, args[0]) is not False for v in value)
        return len(value) == len(args) and all(_fits(v, a) is not False for v, a in zip(value, args))
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, numbers.Real) and not isinstance(value, bool)
    if annotation is str:
        return isinstance(value, str)
    if dataclasses.is_dataclass(annotation):
        return isinstance(value, annotation)
    return None


def _numeric_items(value: Any) -> list[Any]:
    items = list(value) if isinstance(value, tuple) else [value]
    return [v for v in items if isinstance(v, numbers.Real) and not isinstance(v, bool)]


def _limits_text(limits: Mapping[str, Any], floats: bool) -> str:
    parts = [f"{op} {limits[key]:g}" if isinstance(limits[key], float) else f"{op} {limits[key]}"
             for key, op in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")) if key in limits]
    text = " and ".join(parts)
    noun = ("a finite number" if limits.get("finite", True) else "a number") if floats else "an integer"
    return f"{noun} {text}".strip()


def _check_field(key: str, value: Any, annotation: Any, limits: Mapping[str, Any]) -> None:
    fits = _fits(value, annotation)
    if fits is False:
        raise UserError(f"{key}={_show(value)}: must be {_type_name(annotation)}")
    if "choices" in limits and value not in limits["choices"]:
        raise UserError(f"{key}={_show(value)}: must be one of {', '.join(map(str, limits['choices']))}")
    is_tuple = isinstance(value, tuple)
    if is_tuple:
        if "min_len" in limits and len(value) < limits["min_len"]:
            raise UserError(f"{key}={_show(value)}: needs at least {limits['min_len']} values")
        if "max_len" in limits and len(value) > limits["max_len"]:
            raise UserError(f"{key}={_show(value)}: takes at most {limits['max_len']} values")
        if (typing.get_origin(annotation) is tuple and typing.get_args(annotation)[-1:] == (Ellipsis,)
                and not value and "min_len" not in limits):
            raise UserError(f"{key}=(): needs at least one value")
    floats = any(isinstance(v, float) for v in _numeric_items(value)) or annotation is float or (
        typing.get_origin(annotation) is tuple and float in typing.get_args(annotation))
    each = "each value " if is_tuple else ""
    for v in _numeric_items(value):
        bad = (floats and limits.get("finite", True) and not math.isfinite(v)) \
            or ("ge" in limits and not v >= limits["ge"]) or ("gt" in limits and not v > limits["gt"]) \
            or ("le" in limits and not v <= limits["le"]) or ("lt" in limits and not v < limits["lt"])
        if bad:
            raise UserError(f"{key}={_show(value)}: {each}must be {_limits_text(limits, floats)}")


def check_domains(config: Any, domains: Mapping[str, Mapping[str, Any]], prefix: str = "") -> None:
    """Domains for fields of dataclasses defined elsewhere (dotted key -> ``domain`` keys), checked
    like field metadata: for a config's ``validate`` hook when it cannot annotate those classes."""
    for key, limits in domains.items():
        *parents, name = key.split(".")
        owner = config
        for part in parents:
            owner = getattr(owner, part)
        annotation = _type_hints(type(owner)).get(name, Any)
        _check_field(f"{prefix}{key}", getattr(owner, name), annotation, limits)


def validate_config(config: Any, prefix: str = "") -> None:
    """Check every field of the (nested) config dataclass ``config`` against its annotation and
    domain, then the class's own ``validate()`` (cross-field rules); the first violation is a
    one-line ``UserError`` naming the dotted field (``prefix`` + name) and what it may be."""
    hints = _type_hints(type(config))
    for f in dataclasses.fields(config):
        key = f"{prefix}{f.name}"
        value = getattr(config, f.name)
        annotation = hints.get(f.name, Any)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            if dataclasses.is_dataclass(annotation) and not isinstance(value, annotation):
                raise UserError(f"{key}: must be a {annotation.__name__}, got a {type(value).__name__}")
            validate_config(value, prefix=f"{key}.")
            continue
        limits = dict(f.metadata)
        if f.name == "num_parts" and not prefix and not any(k in limits for k in ("ge", "gt", "le", "lt")):
            limits.update(ge=1, le=MAX_PARTS)  # every method config has one (the Method contract)
        _check_field(key, value, annotation, limits)
    hook = getattr(config, "validate", None)
    if callable(hook):  # cross-field rules; a nested config's hook gets its dotted prefix
        hook(prefix) if inspect.signature(hook).parameters else hook()


def to_jsonable(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (tuple, list)):
        return [to_jsonable(x) for x in obj]
    if isinstance(obj, (frozenset, set)):
        return sorted(to_jsonable(x) for x in obj)
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    return obj


def from_jsonable(cls: type, data: Mapping[str, Any]) -> Any:
    """Rebuild a (possibly nested) frozen dataclass written by ``to_jsonable``."""
    hints = _field_types(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        value = data[f.name]
        annotation = hints[f.name]
        if dataclasses.is_dataclass(annotation):
            value = from_jsonable(annotation, value)
        elif typing.get_origin(annotation) is tuple and isinstance(value, list):
            value = tuple(value)
        kwargs[f.name] = value
    return cls(**kwargs)


def dumps(obj: Any) -> str:
    return json.dumps(to_jsonable(obj), indent=2, sort_keys=True)
