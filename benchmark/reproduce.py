"""``python -m benchmark reproduce TABLE``: plan the runs a paper table needs, find the ones
already in ``--out``, run the rest (``benchmark.reproduce_exec``), render the table in the
paper's layout (``benchmark.table_render``).

Planning (:func:`plan_table`) turns a manifest (``benchmark.table_manifest``) into **run cells**:
one ``python -m segbench run`` command per (row, protocol variant, K, seed). Two rows whose runs
would be identical share one cell. A run folder in ``--out`` is the cell's when its
``config.json`` records the same method, preset, resolved method config (hashed), protocol and
protocol version, protocol options, seed and ``--limit``, and, once finished, its
``metrics.json`` holds the expected ``n_eval``. Each cell is then

- ``done``: a finished folder (reused; the newest when several),
- ``running``: a folder whose ``.lock`` another process holds,
- ``resume``: an unfinished folder (``run --resume DIR`` continues it),
- ``run``: none yet, or ``missing data`` (the dataset's own check failed: the reason is its
  one line, e.g. ``needs celeba_wild: img_celeba not found ...``).

Run folders are data: nothing named in one is imported here (the config is hashed, not built).
"""
from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import os
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from segbench.benchmark.errors import DataNotFoundError, UserError, one_line
from segbench.benchmark.table_manifest import Column, Row, TableManifest

DONE, RUNNING, RESUME, RUN, MISSING_DATA = "done", "running", "resume", "run", "missing data"
# Where reproduce keeps its own files inside --out: logs of every cell and the progress state.
STATE_DIR = ".reproduce"
# How the run commands are shown and started: the installed package's CLI (= python -m benchmark).
CLI = ("python", "-m", "segbench")


@dataclass(frozen=True)
class RunCell:
    """One run the table needs."""

    id: str  # <row>.<protocol>[.<options>][.k<K>].s<seed>: names its log file
    row_ids: tuple[str, ...]  # the rows whose numbers it gives
    method: str
    preset: str
    protocol: str
    options: tuple[tuple[str, str], ...]  # as given (--option)
    resolved_options: tuple[tuple[str, str], ...]  # every option of the protocol, as recorded
    overrides: tuple[str, ...]  # --set key=value
    seed: int
    limit: int | None
    config_hash: str  # "" when the config does not resolve (the run will say why)
    config_error: str
    protocol_version: str
    dataset: str
    expected_n_eval: int | None  # None when the data is missing

    def match_key(self) -> tuple:
        return (self.method, self.preset, self.config_hash, self.protocol, self.protocol_version,
                self.resolved_options, self.seed, self.limit)


@dataclass(frozen=True)
class CellStatus:
    cell: RunCell
    status: str  # DONE, RUNNING, RESUME, RUN or MISSING_DATA
    folder: Path | None  # the folder reused, resumed or running
    reason: str  # missing data / config error: one line


@dataclass(frozen=True)
class TableCellRef:
    """What a (row, column) of the printed table shows: its runs, or why it has none."""

    row_id: str
    column_id: str
    cell_ids: tuple[str, ...]  # one per seed; empty for cited / not meaningful cells
    reason: str  # why a cited row or column, or a not-meaningful cell, has no runs


@dataclass(frozen=True)
class TablePlan:
    manifest: TableManifest
    preset: str
    seeds: tuple[int, ...]
    limit: int | None
    out: str
    data_root: str | None
    cells: tuple[CellStatus, ...]
    table_cells: tuple[TableCellRef, ...]
    higher_is_better: tuple[tuple[str, bool], ...]  # column id -> direction
    device: str | None = None  # --device for every cell's run (None: the run's default, auto)

    def cell(self, cell_id: str) -> CellStatus:
        return next(c for c in self.cells if c.cell.id == cell_id)

    def state_dir(self) -> Path:
        return Path(self.out) / STATE_DIR / self.manifest.id


# ---------------------------------------------------------------- commands


def _place(data_root: str | None, device: str | None) -> list[str]:
    return (["--data-root", data_root] if data_root else []) + (["--device", device] if device else [])


def run_args(cell: RunCell, out: str, threads: int, data_root: str | None, device: str | None = None) -> list[str]:
    """The ``run`` arguments of a new run of ``cell``."""
    args = ["run", "--method", cell.method, "--protocol", cell.protocol, "--preset", cell.preset,
            "--seed", str(cell.seed)]
    for item in cell.overrides:
        args += ["--set", item]
    for key, value in cell.options:
        args += ["--option", f"{key}={value}"]
    if cell.limit is not None:
        args += ["--limit", str(cell.limit)]
    args += ["--out", out, "--threads", str(threads), "--no-progress"]
    return args + _place(data_root, device)


def resume_args(folder: Path, threads: int, data_root: str | None, device: str | None = None) -> list[str]:
    args = ["run", "--resume", str(folder), "--threads", str(threads), "--no-progress"]
    return args + _place(data_root, device)


def cell_args(status: CellStatus, out: str, threads: int, data_root: str | None,
              device: str | None = None) -> list[str]:
    if status.status == RESUME and status.folder is not None:
        return resume_args(status.folder, threads, data_root, device)
    return run_args(status.cell, out, threads, data_root, device)


def show_command(args: list[str]) -> str:
    return shlex.join([*CLI, *args])


# ---------------------------------------------------------------- run folders


def config_hash(method_config: Any) -> str:
    """A short digest of a method config as ``config.json`` records it (JSON, keys sorted)."""
    text = json.dumps(method_config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def folder_locked(run_dir: Path) -> bool:
    """Whether another process holds the run folder's ``.lock`` (a shared probe, released at once)."""
    try:
        fd = os.open(Path(run_dir) / ".lock", os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def _folder_key(config: Mapping[str, Any]) -> tuple | None:
    """The match key a ``config.json`` records (None for a file that is not a run config)."""
    try:
        request, protocol = config["request"], config["protocol"]
        options = tuple(sorted((str(k), str(v)) for k, v in config["protocol_options"].items()))
        return (request["method"], request["preset"], config_hash(config["method_config"]), protocol["name"],
                str(protocol["version"]), options, int(request["seed"]), request.get("limit"))
    except (KeyError, TypeError, ValueError, AttributeError):
        return None


def _n_evals(run_dir: Path) -> set[int] | None:
    """The ``n_eval`` values of a finished run's records (None: no readable metrics.json)."""
    try:
        records = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
        return {int(r["n_eval"]) for r in records}
    except (OSError, ValueError, TypeError, KeyError):
        return None


def scan_folders(out: Path, cells: list[RunCell]) -> dict[tuple, list[Path]]:
    """Run folders of ``out/<protocol>/<method>/`` by match key, oldest first (names are UTC stamps)."""
    found: dict[tuple, list[Path]] = {}
    for protocol, method in sorted({(c.protocol, c.method) for c in cells}):
        for config_path in sorted((Path(out) / protocol / method).glob("*/config.json")):
            try:
                key = _folder_key(json.loads(config_path.read_text(encoding="utf-8")))
            except (OSError, ValueError):
                key = None
            if key is not None:
                found.setdefault(key, []).append(config_path.parent)
    return found


def classify(cell: RunCell, folders: list[Path], missing_data: str) -> CellStatus:
    finished, running, unfinished = [], [], []
    for folder in folders:
        n_evals = _n_evals(folder)
        if n_evals is not None:
            if cell.expected_n_eval is None or n_evals == {cell.expected_n_eval}:
                finished.append(folder)
        elif folder_locked(folder):
            running.append(folder)
        else:
            unfinished.append(folder)
    if finished:
        return CellStatus(cell, DONE, finished[-1], "")
    if running:
        return CellStatus(cell, RUNNING, running[-1], "")
    if missing_data:
        return CellStatus(cell, MISSING_DATA, None, missing_data)
    if unfinished:
        return CellStatus(cell, RESUME, unfinished[-1], "")
    return CellStatus(cell, RUN, None, cell.config_error)


# ---------------------------------------------------------------- planning


class _Registries:
    """Protocol specs, data checks and expected n_eval, each computed once per plan."""

    def __init__(self, data_root: str | None) -> None:
        from segbench.protocols import PROTOCOLS

        self.protocols = PROTOCOLS
        self.data_root = data_root
        self._data: dict[tuple, tuple[str, int | None]] = {}

    def data(self, protocol: str, options: Mapping[str, str], limit: int | None) -> tuple[str, int | None]:
        """(missing-data reason or "", the expected n_eval) for a protocol variant."""
        key = (protocol, tuple(sorted(options.items())), limit)
        if key not in self._data:
            self._data[key] = self._check_data(protocol, options, limit)
        return self._data[key]

    def _check_data(self, protocol: str, options: Mapping[str, str], limit: int | None) -> tuple[str, int | None]:
        from segbench.datasets import DATASETS
        from segbench.datasets.paths import resolve_data_root

        protocol_cls = self.protocols.get(protocol)
        spec = protocol_cls.spec
        try:
            dataset = DATASETS.get(spec.dataset)(root=resolve_data_root(self.data_root, spec.dataset),
                                                 image_size=spec.image_size, **spec.dataset_options)
            splits = {role: dataset.split(name, limit=limit) for role, name in spec.splits.items() if role != "fit"}
            return "", int(protocol_cls(options).n_eval(splits))
        except DataNotFoundError as exc:
            message = one_line(exc).split("; expected layout")[0]  # the layout and source: `prepare` shows them
            message = message[len(spec.dataset) + 2:] if message.startswith(f"{spec.dataset}: ") else message
            return f"needs {spec.dataset}: {message}", None
        except UserError as exc:  # a copy that is there but broken: its own one line
            return f"{spec.dataset} data unusable: {one_line(exc)}", None


def _slug(options: tuple[tuple[str, str], ...]) -> str:
    return "-".join(f"{k}-{v}" for k, v in options).replace("/", "-").replace(" ", "-")


def _manifest_error(manifest: TableManifest, message: str) -> UserError:
    return UserError(f"{manifest.path}: {message}")


def _column_direction(manifest: TableManifest, column: Column, registries: _Registries) -> bool:
    """The column's higher_is_better, from the protocol's declared metric (checked to exist)."""
    if column.protocol is None:
        return bool(column.higher_is_better)
    try:
        spec = registries.protocols.get(column.protocol).spec
        options = spec.resolve_options(dict(column.options))
    except UserError as exc:
        raise _manifest_error(manifest, f"column {column.id!r}: {one_line(exc)}") from None
    declared = {m.name: m.higher_is_better for m in spec.metric_specs(options)}
    if column.metric not in declared:
        raise _manifest_error(manifest, f"column {column.id!r}: protocol {column.protocol!r} with options {options} "
                                        f"has no metric {column.metric!r} (it has {', '.join(declared)})")
    if column.higher_is_better is not None and column.higher_is_better != declared[column.metric]:
        raise _manifest_error(manifest, f"column {column.id!r}: higher_is_better contradicts the protocol's metric")
    return declared[column.metric]


def _plan_runs(manifest: TableManifest, row: Row, column: Column, preset: str, seeds: tuple[int, ...],
               limit: int | None, registries: _Registries, explicit_seeds: bool) -> list[RunCell]:
    """The run cells (one per seed) behind one implemented row x protocol column."""
    from segbench.benchmark.config import parse_set_args, to_jsonable
    from segbench.benchmark.runner import RunRequest, resolve_method_config
    from segbench.methods import METHODS

    method_cls = METHODS.get(row.method)
    spec = registries.protocols.get(column.protocol).spec
    where = f"row {row.id!r} x column {column.id!r}"
    missing = set(spec.needs) - set(method_cls.produces)
    if missing:
        raise _manifest_error(manifest, f"{where}: {row.method} does not produce {sorted(missing)}; mark the cell "
                                        "not_meaningful")
    overrides = list(row.overrides_for(column.protocol))
    fixed = method_cls.fixed_num_parts
    if column.num_parts is not None:
        if fixed is not None and column.num_parts != fixed:
            raise _manifest_error(manifest, f"{where}: {row.method} always has K={fixed}, the column K="
                                            f"{column.num_parts}; mark the cell not_meaningful")
        if fixed is None and column.num_parts != spec.num_parts \
                and not any(o.partition("=")[0].strip() == "num_parts" for o in overrides):
            overrides.append(f"num_parts={column.num_parts}")
    options = dict(column.options)
    resolved_options = tuple(sorted(spec.resolve_options(options).items()))
    set_k = [o.partition("=")[2].strip() for o in overrides if o.partition("=")[0].strip() == "num_parts"]
    k = set_k[-1] if set_k else fixed or spec.num_parts
    base_id = ".".join(p for p in (row.id, column.protocol, _slug(column.options), f"k{k}") if p)
    missing_data, n_eval = registries.data(column.protocol, options, limit)
    cells = []
    for seed in row.seeds if row.seeds and not explicit_seeds else seeds:
        request = RunRequest(method=row.method, protocol=column.protocol, preset=preset, seed=seed, limit=limit,
                             overrides=parse_set_args(overrides), options=options)
        try:
            _, config = resolve_method_config(request)
            digest, error = config_hash(json.loads(json.dumps(to_jsonable(config), default=str))), ""
        except UserError as exc:  # a bad switch fails this cell only, when it runs
            digest, error = "", one_line(exc)
        cells.append(RunCell(id=f"{base_id}.s{seed}", row_ids=(row.id,), method=row.method, preset=preset,
                             protocol=column.protocol, options=column.options, resolved_options=resolved_options,
                             overrides=tuple(overrides), seed=seed, limit=limit, config_hash=digest,
                             config_error=error, protocol_version=spec.version, dataset=spec.dataset,
                             expected_n_eval=n_eval if not missing_data else None))
    return cells


def plan_table(manifest: TableManifest, *, preset: str | None = None, seeds: tuple[int, ...] | None = None,
               limit: int | None = None, out: str = "runs", data_root: str | None = None) -> TablePlan:
    """Every run cell of the table with its status in ``out`` (see the module docstring)."""
    from segbench.methods import METHODS

    preset = preset or manifest.preset
    explicit = bool(seeds)  # --seeds: for every row, whatever seeds a row names
    seeds = tuple(seeds) if seeds else manifest.seeds
    limit = limit if limit is not None else manifest.limit
    registries = _Registries(data_root)
    for row in manifest.rows:
        if row.method is not None:
            METHODS.entry(row.method)  # an unknown name: one line with suggestions
    directions = tuple((c.id, _column_direction(manifest, c, registries)) for c in manifest.columns)
    by_key: dict[tuple, RunCell] = {}  # identical runs of two rows: one cell
    refs = []
    for row in manifest.rows:
        planned: dict[tuple, tuple[str, ...]] = {}  # one row's columns that share a run variant
        for column in manifest.columns:
            reason = row.cited or column.cited or row.why_not_meaningful(column.id)
            if reason:
                refs.append(TableCellRef(row.id, column.id, (), reason))
                continue
            variant = (column.protocol, column.options, column.num_parts)
            if variant not in planned:
                ids = []
                for cell in _plan_runs(manifest, row, column, preset, seeds, limit, registries, explicit):
                    key = cell.match_key() if cell.config_hash else ("unresolved", cell.id)
                    if key in by_key:
                        by_key[key] = dataclasses.replace(by_key[key], row_ids=by_key[key].row_ids + (row.id,))
                    else:
                        by_key[key] = cell
                    ids.append(by_key[key].id)
                planned[variant] = tuple(ids)
            refs.append(TableCellRef(row.id, column.id, planned[variant], ""))
    cells = list(by_key.values())
    duplicates = {c.id for c in cells if sum(d.id == c.id for d in cells) > 1}
    if duplicates:
        raise _manifest_error(manifest, f"two different runs would share the id {sorted(duplicates)[0]!r}; give the "
                                        "rows distinct ids")
    folders = scan_folders(Path(out), cells)
    statuses = tuple(classify(c, folders.get(c.match_key(), []) if c.config_hash else [],
                              registries.data(c.protocol, dict(c.options), limit)[0]) for c in cells)
    return TablePlan(manifest=manifest, preset=preset, seeds=seeds, limit=limit, out=out, data_root=data_root,
                     cells=statuses, table_cells=tuple(refs), higher_is_better=directions)
