"""Frozen-dataclass configs: named presets and typed ``key=value`` overrides.

A method's ``Config`` is a frozen dataclass whose defaults are the paper's values. Presets
are plain dicts of field overrides (``PRESETS = {"paper": {}, "quick": {...}, "smoke": {...}}``)
so every number is findable with one grep. Nested dataclass fields take dotted keys
(``generator.run=...``).
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import types
import typing
from typing import Any, Literal, Mapping, Union

from segbench.benchmark.errors import UserError

PRESET_NAMES = ("paper", "quick", "smoke")


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
    return apply_overrides(config, overrides)


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
