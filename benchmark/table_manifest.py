"""Table manifests: which runs a paper's table needs, and how the paper lays it out.

A manifest is data (``results/paper/tables/<TABLE>.toml``), one per printed table. It names

- the table's **rows** in printed order: the method as printed, and either the registered method
  (``method``, ``set`` / ``set_per_protocol`` switches) that reproduces it, or ``cited``: the
  reason the row is shown with the paper's number only ("not implemented: cited only");
- its **columns** in printed order: protocol, ``options``, K (``num_parts``), metric, unit and the
  paper's decimals; a column the harness has no protocol for is ``cited`` too (paper values only);
- ``not_meaningful``: row x column cells that are not run, with the reason (e.g. a foreground-only
  method on a landmark protocol);
- the seeds, the default preset, and the layout rule for the best value (``bold``).

The published numbers are not copied into the manifest: they are joined from
``results/paper/<paper_csv>`` (:func:`paper_values`) by ``paper_table``, the row's ``paper_name``
(the CSV's ``method_as_printed``) and the column's protocol, metric and K, so the CSVs stay the
one place a published number lives. Nothing here imports torch: :mod:`benchmark.reproduce`
checks the names against the registries.
"""
from __future__ import annotations

import math
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from segbench.benchmark.errors import UserError
from segbench.benchmark.records import REPO_ROOT

MANIFEST_DIR = REPO_ROOT / "results" / "paper" / "tables"
PAPER_DIR = REPO_ROOT / "results" / "paper"
BOLD_RULES = ("best", "best_per_group", "none")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")  # ids name log files: no separators, no spaces

TABLE_KEYS = {"id", "title", "caption", "paper_csv", "paper_table", "preset", "seeds", "limit", "notes", "layout",
              "columns", "rows"}
LAYOUT_KEYS = {"bold", "row_group_header"}
COLUMN_KEYS = {"id", "label", "group", "protocol", "metric", "options", "num_parts", "unit", "digits",
               "paper_protocol", "paper_metric", "cited", "higher_is_better"}
ROW_KEYS = {"id", "label", "group", "paper_name", "method", "set", "set_per_protocol", "cited", "not_meaningful",
            "note", "seeds"}


@dataclass(frozen=True)
class Column:
    """One printed column: a metric of one protocol variant at one K."""

    id: str
    label: str
    group: str
    protocol: str | None  # None: the harness has no such protocol (``cited`` says why)
    metric: str
    options: tuple[tuple[str, str], ...]  # --option pairs, sorted
    num_parts: int | None  # None: the protocol's K (or the method's fixed K)
    unit: str
    digits: int  # decimals the paper prints
    paper_protocol: str  # the CSV's protocol name (default: protocol)
    paper_metric: str  # the CSV's metric name (default: metric)
    cited: str  # non-empty: paper values only, this is why
    higher_is_better: bool | None  # from the protocol spec; given only for cited columns


@dataclass(frozen=True)
class Row:
    """One printed row: a method as the paper names it."""

    id: str
    label: str
    group: str
    paper_name: str  # method_as_printed in the paper CSV
    method: str | None  # None: cited only (``cited`` says why)
    overrides: tuple[str, ...]  # --set key=value, for every column
    overrides_per_protocol: tuple[tuple[str, tuple[str, ...]], ...]  # protocol -> more --set values
    cited: str
    not_meaningful: tuple[tuple[str, str], ...]  # column id -> why that cell is not run
    note: str
    seeds: tuple[int, ...] | None  # fewer seeds for this row (an expensive one); None: the table's

    def overrides_for(self, protocol: str) -> tuple[str, ...]:
        extra = dict(self.overrides_per_protocol).get(protocol, ())
        return self.overrides + tuple(extra)

    def why_not_meaningful(self, column_id: str) -> str:
        return dict(self.not_meaningful).get(column_id, "")


@dataclass(frozen=True)
class Layout:
    bold: str  # one of BOLD_RULES: which value of a column is set in bold (per source: paper, ours)
    row_group_header: str  # header of the row-group column ("" = no such column)


@dataclass(frozen=True)
class TableManifest:
    id: str
    title: str
    caption: str
    path: Path
    paper_csv: str  # "" = no published numbers (a stand-in table)
    paper_table: str
    preset: str
    seeds: tuple[int, ...]
    limit: int | None
    notes: tuple[str, ...]
    layout: Layout
    columns: tuple[Column, ...]
    rows: tuple[Row, ...]

    @property
    def has_paper(self) -> bool:
        return bool(self.paper_csv)


def _fail(path: Path, where: str, message: str) -> UserError:
    return UserError(f"{path}: {where}: {message}")


def _unknown_keys(path: Path, where: str, table: Mapping[str, Any], known: set[str]) -> None:
    unknown = sorted(set(table) - known)
    if unknown:
        raise _fail(path, where, f"unknown key {unknown[0]!r} (known: {', '.join(sorted(known))})")


def _string(path: Path, where: str, table: Mapping[str, Any], key: str, default: str | None = None) -> str:
    value = table.get(key, default)
    if not isinstance(value, str) or (default is None and not value):
        raise _fail(path, where, f"{key} must be a non-empty string, got {value!r}")
    return value


def _id(path: Path, where: str, table: Mapping[str, Any]) -> str:
    value = _string(path, where, table, "id")
    if not _ID.match(value):
        raise _fail(path, where, f"id {value!r}: letters, digits, '_', '.', '-' only")
    return value


def _strings(path: Path, where: str, value: Any, key: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _fail(path, where, f"{key} must be a list of strings, got {value!r}")
    return tuple(value)


def _key_values(path: Path, where: str, items: tuple[str, ...], key: str) -> tuple[str, ...]:
    for item in items:
        name, sep, _ = item.partition("=")
        if not sep or not name.strip():
            raise _fail(path, where, f"{key} entry {item!r} is not key=value")
    return items


def _column(path: Path, index: int, raw: Any) -> Column:
    where = f"columns[{index}]"
    if not isinstance(raw, dict):
        raise _fail(path, where, "must be a table")
    _unknown_keys(path, where, raw, COLUMN_KEYS)
    cid = _id(path, where, raw)
    where = f"column {cid!r}"
    protocol = raw.get("protocol")
    cited = _string(path, where, raw, "cited", "")
    if protocol is None and not cited:
        raise _fail(path, where, "needs a protocol, or cited = \"why the harness cannot run it\"")
    if protocol is not None and not (isinstance(protocol, str) and protocol):
        raise _fail(path, where, f"protocol must be a registry name, got {protocol!r}")
    options = raw.get("options", {})
    if not isinstance(options, dict) or not all(isinstance(v, str) for v in options.values()):
        raise _fail(path, where, f"options must be a table of strings, got {options!r}")
    num_parts = raw.get("num_parts")
    if num_parts is not None and not (isinstance(num_parts, int) and not isinstance(num_parts, bool)
                                      and num_parts >= 1):
        raise _fail(path, where, f"num_parts must be an integer >= 1, got {num_parts!r}")
    digits = raw.get("digits", 2)
    if not (isinstance(digits, int) and 0 <= digits <= 8):
        raise _fail(path, where, f"digits must be an integer 0..8, got {digits!r}")
    hib = raw.get("higher_is_better")
    if hib is not None and not isinstance(hib, bool):
        raise _fail(path, where, f"higher_is_better must be true or false, got {hib!r}")
    if protocol is None and hib is None:
        raise _fail(path, where, "a cited column (no protocol) must say higher_is_better")
    metric = _string(path, where, raw, "metric")
    return Column(id=cid, label=_string(path, where, raw, "label"), group=_string(path, where, raw, "group", ""),
                  protocol=protocol, metric=metric, options=tuple(sorted(options.items())), num_parts=num_parts,
                  unit=_string(path, where, raw, "unit", ""), digits=digits,
                  paper_protocol=_string(path, where, raw, "paper_protocol", protocol or ""),
                  paper_metric=_string(path, where, raw, "paper_metric", metric), cited=cited,
                  higher_is_better=hib)


def _row(path: Path, index: int, raw: Any, column_ids: set[str]) -> Row:
    where = f"rows[{index}]"
    if not isinstance(raw, dict):
        raise _fail(path, where, "must be a table")
    _unknown_keys(path, where, raw, ROW_KEYS)
    rid = _id(path, where, raw)
    where = f"row {rid!r}"
    method = raw.get("method")
    cited = _string(path, where, raw, "cited", "")
    if (method is None) == (not cited):
        raise _fail(path, where, "give either method (a registered method) or cited (why it is shown with the "
                                 "paper's number only)")
    if method is not None and not (isinstance(method, str) and method):
        raise _fail(path, where, f"method must be a registry name, got {method!r}")
    overrides = _key_values(path, where, _strings(path, where, raw.get("set", []), "set"), "set")
    per_protocol = raw.get("set_per_protocol", {})
    if not isinstance(per_protocol, dict):
        raise _fail(path, where, "set_per_protocol must be a table of protocol = [\"key=value\", ...]")
    per = tuple(sorted((p, _key_values(path, where, _strings(path, where, v, f"set_per_protocol.{p}"), "set"))
                       for p, v in per_protocol.items()))
    not_meaningful = raw.get("not_meaningful", {})
    if not isinstance(not_meaningful, dict) or not all(isinstance(v, str) and v for v in not_meaningful.values()):
        raise _fail(path, where, "not_meaningful must be a table of column id = \"reason\"")
    unknown = sorted(set(not_meaningful) - column_ids)
    if unknown:
        raise _fail(path, where, f"not_meaningful names unknown column {unknown[0]!r}")
    label = _string(path, where, raw, "label")
    seeds = raw.get("seeds")
    if seeds is not None:
        seeds = _seeds(path, where, seeds)
    return Row(id=rid, label=label, group=_string(path, where, raw, "group", ""),
               paper_name=_string(path, where, raw, "paper_name", label), method=method, overrides=overrides,
               overrides_per_protocol=per, cited=cited, not_meaningful=tuple(sorted(not_meaningful.items())),
               note=_string(path, where, raw, "note", ""), seeds=seeds)


def _seeds(path: Path, where: str, seeds: Any) -> tuple[int, ...]:
    if not (isinstance(seeds, list) and seeds and all(isinstance(s, int) and not isinstance(s, bool) and s >= 0
                                                      for s in seeds) and len(set(seeds)) == len(seeds)):
        raise _fail(path, where, f"seeds must be a non-empty list of distinct integers >= 0, got {seeds!r}")
    return tuple(seeds)


def _unique(path: Path, kind: str, ids: list[str]) -> None:
    seen = set()
    for i in ids:
        if i in seen:
            raise _fail(path, kind, f"id {i!r} appears twice")
        seen.add(i)


def _contiguous(path: Path, kind: str, groups: list[str]) -> None:
    """A group is printed as one block: its members must be adjacent in the file."""
    closed: set[str] = set()
    for previous, current in zip([None] + groups, groups):
        if current != previous:
            if current in closed:
                raise _fail(path, kind, f"group {current!r} is split in two blocks; keep its entries together")
            if previous is not None:
                closed.add(previous)


def parse_manifest(path: Path, data: Mapping[str, Any]) -> TableManifest:
    """A checked :class:`TableManifest` from parsed TOML (a ``UserError`` names the file and field)."""
    _unknown_keys(path, "table", data, TABLE_KEYS)
    tid = _id(path, "table", data)
    seeds = _seeds(path, "table", data.get("seeds", [0, 1, 2]))
    limit = data.get("limit")
    if limit is not None and not (isinstance(limit, int) and limit >= 1):
        raise _fail(path, "table", f"limit must be an integer >= 1, got {limit!r}")
    layout_raw = data.get("layout", {})
    if not isinstance(layout_raw, dict):
        raise _fail(path, "layout", "must be a table")
    _unknown_keys(path, "layout", layout_raw, LAYOUT_KEYS)
    bold = layout_raw.get("bold", "best")
    if bold not in BOLD_RULES:
        raise _fail(path, "layout", f"bold must be one of {', '.join(BOLD_RULES)}, got {bold!r}")
    layout = Layout(bold=bold, row_group_header=_string(path, "layout", layout_raw, "row_group_header", ""))
    raw_columns, raw_rows = data.get("columns"), data.get("rows")
    if not isinstance(raw_columns, list) or not raw_columns:
        raise _fail(path, "table", "needs at least one [[columns]] entry")
    if not isinstance(raw_rows, list) or not raw_rows:
        raise _fail(path, "table", "needs at least one [[rows]] entry")
    columns = tuple(_column(path, i, c) for i, c in enumerate(raw_columns))
    _unique(path, "columns", [c.id for c in columns])
    rows = tuple(_row(path, i, r, {c.id for c in columns}) for i, r in enumerate(raw_rows))
    _unique(path, "rows", [r.id for r in rows])
    _contiguous(path, "columns", [c.group for c in columns])
    _contiguous(path, "rows", [r.group for r in rows])
    paper_csv = _string(path, "table", data, "paper_csv", "")
    return TableManifest(id=tid, title=_string(path, "table", data, "title"),
                         caption=_string(path, "table", data, "caption", ""), path=path, paper_csv=paper_csv,
                         paper_table=_string(path, "table", data, "paper_table", ""),
                         preset=_string(path, "table", data, "preset", "paper"), seeds=seeds, limit=limit,
                         notes=_strings(path, "table", data.get("notes", []), "notes"), layout=layout,
                         columns=columns, rows=rows)


def manifest_path(table: str, manifest_dir: Path = MANIFEST_DIR) -> Path:
    """``TABLE`` as a name in ``results/paper/tables/`` or as a path to a ``.toml`` file."""
    candidate = Path(table)
    if candidate.suffix == ".toml" or candidate.parent != Path("."):
        if not candidate.is_file():
            raise UserError(f"{table}: no such manifest file")
        return candidate
    path = manifest_dir / f"{table}.toml"
    if not path.is_file():
        known = sorted(p.stem for p in manifest_dir.glob("*.toml"))
        import difflib
        close = difflib.get_close_matches(table, known, n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}?" if close else f"known: {', '.join(known) or 'none'}"
        raise UserError(f"unknown table {table!r}; {hint}")
    return path


def load_manifest(table: str, manifest_dir: Path = MANIFEST_DIR) -> TableManifest:
    path = manifest_path(table, manifest_dir)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: unreadable ({type(exc).__name__})") from None
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{path}: not valid TOML ({exc})") from None
    return parse_manifest(path, data)


def manifest_names(manifest_dir: Path = MANIFEST_DIR) -> list[str]:
    return sorted(p.stem for p in manifest_dir.glob("*.toml"))


# ---------------------------------------------------------------- the published numbers


def paper_values(manifest: TableManifest, paper_dir: Path = PAPER_DIR) -> dict[tuple[str, str], float]:
    """(row id, column id) -> the published number, from ``paper_dir/<paper_csv>`` rows of the
    manifest's ``paper_table``: method_as_printed = the row's ``paper_name``, the column's paper
    protocol and metric, and K equal to the column's or not printed (a row without a K, e.g. a
    foreground method; a column without ``num_parts`` takes any K). Two CSV rows for one cell are a manifest error (``UserError``)."""
    if not manifest.has_paper:
        return {}
    import pandas as pd

    beside = manifest.path.parent / manifest.paper_csv  # a manifest kept elsewhere (tests) brings its own
    path = beside if beside.is_file() else Path(paper_dir) / manifest.paper_csv
    try:
        frame = pd.read_csv(path, dtype={"num_parts": "Int64"}, keep_default_na=False, na_values=[""])
    except (OSError, ValueError) as exc:
        raise UserError(f"{manifest.path}: paper_csv {path}: unreadable ({type(exc).__name__}: {exc})") from None
    frame = frame[frame["table"] == manifest.paper_table]
    values: dict[tuple[str, str], float] = {}
    for row in manifest.rows:
        mine = frame[frame["method_as_printed"] == row.paper_name]
        for column in manifest.columns:
            hits = mine[(mine["protocol"] == column.paper_protocol) & (mine["metric"] == column.paper_metric)]
            if column.num_parts is None:  # the protocol's K: any K the paper printed
                chosen = hits
            else:
                exact = hits[hits["num_parts"] == column.num_parts]
                chosen = exact if len(exact) else hits[hits["num_parts"].isna()]
            if len(chosen) > 1:
                raise UserError(f"{manifest.path}: row {row.id!r} x column {column.id!r} matches {len(chosen)} rows "
                                f"of {path.name} ({manifest.paper_table}); make the column's K or metric specific")
            if len(chosen) == 1:
                value = float(chosen["value"].iloc[0])
                if math.isfinite(value):
                    values[(row.id, column.id)] = value
    return values
