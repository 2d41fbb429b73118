"""A small generic registry of lazily imported plugins.

Entries are registered by name with a ``"module:Object"`` target string, so listing
names never imports the plugin (and therefore never imports torch). Outside packages can
add entries through an ``importlib.metadata`` entry-point group; those are lazy too.
"""
from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass
from typing import Any


class UnknownNameError(LookupError):
    """Raised for a name that is not registered; the message lists close matches."""


@dataclass(frozen=True)
class Entry:
    name: str
    target: str  # "package.module:Object"
    summary: str = ""
    origin: str = "builtin"  # "builtin" or the distribution that provided an entry point


class Registry:
    def __init__(self, kind: str, entry_point_group: str | None = None) -> None:
        self.kind = kind
        self.entry_point_group = entry_point_group
        self._entries: dict[str, Entry] = {}
        self._loaded: dict[str, Any] = {}
        self._entry_points_scanned = entry_point_group is None

    def add(self, name: str, target: str, summary: str = "", origin: str = "builtin") -> None:
        if ":" not in target:
            raise ValueError(f"{self.kind} target must look like 'module:Object', got {target!r}")
        if name in self._entries and self._entries[name].target != target:
            raise ValueError(f"{self.kind} {name!r} is already registered to {self._entries[name].target}")
        self._entries[name] = Entry(name, target, summary, origin)

    def _scan_entry_points(self) -> None:
        if self._entry_points_scanned:
            return
        self._entry_points_scanned = True
        from importlib.metadata import entry_points

        for ep in entry_points(group=self.entry_point_group):
            if ep.name not in self._entries:
                dist = getattr(ep, "dist", None)
                origin = dist.name if dist is not None else "entry-point"
                self.add(ep.name, ep.value, origin=origin)

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

    def get(self, name: str) -> Any:
        """Import and return the registered object (a class, usually)."""
        entry = self.entry(name)
        if name not in self._loaded:
            module_name, _, attr = entry.target.partition(":")
            obj: Any = importlib.import_module(module_name)
            for part in attr.split("."):
                obj = getattr(obj, part)
            self._loaded[name] = obj
        return self._loaded[name]

    def __contains__(self, name: str) -> bool:
        self._scan_entry_points()
        return name in self._entries
