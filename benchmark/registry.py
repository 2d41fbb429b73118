"""A small generic registry of lazily imported plugins.

Entries are registered by name with a ``"module:Object"`` target string, so listing
names never imports the plugin (and therefore never imports torch). Outside packages can
add entries through an ``importlib.metadata`` entry-point group; those are lazy too, and their
one-line summary comes from their distribution's metadata (``Summary``), not from an import.

A third-party entry that is malformed (a value without ``module:Object``) or that cannot be
imported never breaks the others: it is listed with a note, and only asking for it fails, with
one line (``PluginLoadError``, a ``UserError``: the CLI prints it and exits 2).
"""
from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass
from typing import Any

from segbench.benchmark.errors import UserError

BUILTIN = "builtin"


class UnknownNameError(LookupError):
    """Raised for a name that is not registered; the message lists close matches."""


class PluginLoadError(UserError):
    """A registered plugin that cannot be loaded: a malformed entry point or an import failure."""


@dataclass(frozen=True)
class Entry:
    name: str
    target: str  # "package.module:Object"
    summary: str = ""
    origin: str = BUILTIN  # "builtin" or the distribution that provided an entry point
    error: str = ""  # why this entry cannot be loaded (malformed entry point); "" when fine

    @property
    def broken(self) -> bool:
        return bool(self.error)


def _target_problem(target: str) -> str:
    """Why ``target`` is not a ``module:Object`` string ("" when it is one)."""
    module, sep, attr = str(target).partition(":")
    if not sep or not module.strip() or not attr.strip():
        return f"value {target!r} is not 'module:Object'"
    return ""


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def import_target(target: str) -> Any:
    """Import ``"package.module:Object"`` (dotted attributes allowed after the colon)."""
    problem = _target_problem(target)
    if problem:
        raise ValueError(f"target {problem}")
    module_name, _, attr = target.partition(":")
    obj: Any = importlib.import_module(module_name.strip())
    for part in attr.strip().split("."):
        obj = getattr(obj, part)
    return obj


def load_target(target: str, kind: str = "plugin") -> Any:
    """``import_target`` for a user-given target (e.g. ``check-plugin my_pkg.mod:MyMethod``): any
    failure becomes one ``PluginLoadError`` line."""
    problem = _target_problem(target)
    if problem:
        raise PluginLoadError(f"{kind} target {problem}")
    try:
        return import_target(target)
    except Exception as exc:  # noqa: BLE001 (a plugin's import may fail in any way)
        raise PluginLoadError(f"{kind} {target!r} could not be imported: {_one_line(exc)}") from exc


def _distribution_summary(dist: Any) -> str:
    """The ``Summary`` field of a distribution's metadata (reads METADATA; imports nothing)."""
    try:
        summary = dist.metadata["Summary"] if dist is not None else None
    except Exception:  # noqa: BLE001 (unreadable metadata: no summary, not a crash)
        return ""
    return " ".join(str(summary).split()) if summary and str(summary) != "UNKNOWN" else ""


class Registry:
    def __init__(self, kind: str, entry_point_group: str | None = None) -> None:
        self.kind = kind
        self.entry_point_group = entry_point_group
        self._entries: dict[str, Entry] = {}
        self._loaded: dict[str, Any] = {}
        self._entry_points_scanned = entry_point_group is None
        self.scan_error = ""  # set when the entry points themselves could not be read

    def add(self, name: str, target: str, summary: str = "", origin: str = BUILTIN) -> None:
        if _target_problem(target):
            raise ValueError(f"{self.kind} target must look like 'module:Object', got {target!r}")
        if name in self._entries and self._entries[name].target != target:
            raise ValueError(f"{self.kind} {name!r} is already registered to {self._entries[name].target}")
        self._entries[name] = Entry(name, target, summary, origin)

    def _scan_entry_points(self) -> None:
        if self._entry_points_scanned:
            return
        self._entry_points_scanned = True
        from importlib.metadata import entry_points

        try:
            found = list(entry_points(group=self.entry_point_group))
        except Exception as exc:  # noqa: BLE001 (a broken installed distribution must not break us)
            self.scan_error = f"entry points of {self.entry_point_group!r} could not be read: {_one_line(exc)}"
            return
        for ep in found:
            try:
                self._add_entry_point(ep)
            except Exception as exc:  # noqa: BLE001
                name = str(getattr(ep, "name", "?"))
                if name not in self._entries:
                    self._entries[name] = Entry(name, str(getattr(ep, "value", "")), "", "entry-point",
                                                error=f"unreadable entry point: {_one_line(exc)}")

    def _add_entry_point(self, ep: Any) -> None:
        name, value = str(ep.name), str(ep.value)
        if name in self._entries:  # built-ins (and the first distribution) win
            return
        dist = getattr(ep, "dist", None)
        origin = getattr(dist, "name", None) or "entry-point"
        problem = _target_problem(value)
        self._entries[name] = Entry(name, value, _distribution_summary(dist), origin,
                                    error=f"entry point {problem}" if problem else "")

    def names(self) -> list[str]:
        self._scan_entry_points()
        return sorted(self._entries)

    def entries(self) -> list[Entry]:
        return [self._entries[n] for n in self.names()]

    def entry(self, name: str) -> Entry:
        self._scan_entry_points()
        if name not in self._entries:
            close = difflib.get_close_matches(name, list(self._entries), n=3, cutoff=0.5)
            hint = f"did you mean {', '.join(repr(c) for c in close)}?" if close else (
                f"known: {', '.join(sorted(self._entries))}")
            raise UnknownNameError(f"unknown {self.kind} {name!r}; {hint}")
        return self._entries[name]

    def describe(self, entry: Entry) -> str:
        """``method 'x' from distribution 'y'`` (or just ``method 'x'`` for a built-in)."""
        where = "" if entry.origin == BUILTIN else f" from distribution {entry.origin!r}"
        return f"{self.kind} {entry.name!r}{where}"

    def get(self, name: str) -> Any:
        """Import and return the registered object (a class, usually).

        A third-party entry that is malformed or fails to import raises ``PluginLoadError`` with
        one line; a built-in that fails to import is a bug here, and raises as it is."""
        entry = self.entry(name)
        if name not in self._loaded:
            if entry.broken:
                raise PluginLoadError(f"{self.describe(entry)} is broken: {entry.error}")
            try:
                obj = import_target(entry.target)
            except Exception as exc:  # noqa: BLE001 (a plugin's import may fail in any way)
                if entry.origin == BUILTIN:
                    raise
                raise PluginLoadError(f"{self.describe(entry)} could not be imported: {_one_line(exc)}") from exc
            self._loaded[name] = obj
        return self._loaded[name]

    def __contains__(self, name: str) -> bool:
        self._scan_entry_points()
        return name in self._entries
