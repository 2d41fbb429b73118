"""Comparison tables: every run's records aggregated over runs (mean ± sample std, count),
pivoted method × (protocol, metric), and joined with the papers' reported numbers.

A row of ``runs_aggregated`` is one group of runs that agree on every field that changes a
number (:data:`GROUP_KEYS`: protocol and its version, metric, split, method, preset, K, ``limit``,
``n_eval`` and the records' schema). ``n`` counts runs, not unique seeds; two runs of one seed are
flagged (``seeds 0,0, duplicate seed``). Runs scored with ``--limit`` are rows of their own
(``… limit=8``), never averaged with full runs, and are left out of ``paper_vs_ours``. Schema-1
records (no ``limit``/``batch_size`` recorded) are rows of their own, labelled ``(schema 1)``.
``batch_size`` is not a group key: no schema-2 value depends on it (``runs_aggregated`` lists it).

Every ``metrics.json`` is read on its own: one that cannot be read (truncated, empty, not JSON),
breaks the results schema, or holds a NaN/infinite value is left out with one warning line on
stderr naming the file; the other runs are still tabulated.

With ``ci=True`` (``tables --ci``) it adds ``ci.md``/``ci.csv``: paired bootstrap 95% intervals of
the difference between two methods on the same protocol and seeds, from the runs' per-image scores
(:func:`paired_ci`); only runs of the same ``limit`` are paired.

Outputs are deterministic (sorted rows, fixed number formats, no timestamps, a fixed bootstrap
seed), so the same runs give byte-identical files. Every file is written atomically.

Default paths (:func:`resolve_paths`) are the project's, not the cwd's: runs from ``runs/``,
papers' numbers from ``results/paper/``, tables to ``runs/tables/``; the committed
``results/tables/`` is regenerated only on request (``make tables``).
"""
from __future__ import annotations

import itertools
import json
import math
import os
import secrets
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd

from segbench.benchmark.errors import UserError
from segbench.benchmark.paired_bootstrap import RESAMPLES, SEED, paired_bootstrap
from segbench.benchmark.records import REPO_ROOT, RECORD_FIELDS, validate_record

# Columns of results/paper/*.csv: one row per number printed in a paper.
PAPER_COLUMNS = ("paper", "table", "citation", "method_as_printed", "method", "protocol", "metric",
                 "num_parts", "value", "note")
# Optional columns and their value when a CSV lacks them. ``setting`` is free text (``"Wild (K=8)"``,
# ``"ablation: n_per=3"``); ``implemented`` says whether our registries have the protocol and metric.
OPTIONAL_PAPER_COLUMNS = {"setting": "", "implemented": False}
# Rows whose setting starts with one of these are listed in paper_vs_ours but not joined with our runs:
# ablations and numbers a paper copies from another would otherwise pair with the same runs as the
# paper's main number. Hyperparameter rows are not results and are left out of paper_vs_ours.
UNJOINED_SETTING_PREFIXES = ("ablation", "copied")
UNLISTED_SETTING_PREFIXES = ("hyperparameter",)
# Every field that changes a number: runs are averaged only within one such group.
GROUP_KEYS = ["protocol", "protocol_version", "metric", "split", "higher_is_better", "method", "preset",
              "num_parts", "limit", "n_eval", "schema_version"]
AGGREGATE_COLUMNS = GROUP_KEYS + ["mean", "std", "n_runs", "n_seeds", "seeds", "duplicate_seed", "batch_size"]

# Project-relative defaults of the ``tables`` command.
DEFAULT_RUNS = Path("runs")
DEFAULT_PAPER = Path("results") / "paper"
DEFAULT_OUT = Path("runs") / "tables"

Warn = Callable[[str], None]


def warn_stderr(message: str) -> None:
    """One ``warning: ...`` line on stderr (looked up at call time, so redirections apply)."""
    print(f"warning: {message}", file=sys.stderr)


def _quiet(message: str) -> None:
    pass


# ---------------------------------------------------------------- reading runs


@dataclass(frozen=True)
class RunFile:
    """One readable ``metrics.json``: its path and its records (validated, schema 2)."""

    path: Path
    records: list[dict]


def _read_metrics(path: Path) -> list[dict]:
    """The validated records of one metrics.json; ``ValueError`` says what is wrong with it."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"unreadable ({type(exc).__name__}: {exc})") from None
    if not text.strip():
        raise ValueError("unreadable (empty file)")
    try:
        rows = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise ValueError(f"unreadable (not JSON: {exc})") from None
    if not isinstance(rows, list):
        raise ValueError(f"not a list of records (a JSON {type(rows).__name__})")
    if not rows:
        raise ValueError("holds no records")
    records = []
    for i, row in enumerate(rows):
        try:
            records.append(validate_record(row))
        except ValueError as exc:
            raise ValueError(f"record {i} breaks the results schema: {exc}") from None
    bad = [r for r in records if not math.isfinite(r["value"])]
    if bad:
        raise ValueError(f"{bad[0]['metric']} = {bad[0]['value']}, not a finite number")
    return records


def read_runs(runs_dir: Path, warn: Warn = warn_stderr) -> list[RunFile]:
    """Every readable ``runs_dir/**/metrics.json`` in path order; each one left out is named in one
    ``warn`` line (``<path>: left out, <why>``)."""
    runs = []
    for path in sorted(Path(runs_dir).glob("**/metrics.json")):
        try:
            runs.append(RunFile(path, _read_metrics(path)))
        except ValueError as exc:
            warn(f"{path}: left out, {exc}")
            continue
        # Protocol variants scored later without retraining (``eval --option``): only metrics the
        # run's own metrics.json lacks, so no value is counted twice.
        seen = {(r["metric"], r["split"]) for r in runs[-1].records}
        for variant in sorted(path.parent.glob("metrics_variant-*.json")):
            try:
                extra = [r for r in _read_metrics(variant) if (r["metric"], r["split"]) not in seen]
            except ValueError as exc:
                warn(f"{variant}: left out, {exc}")
                continue
            if extra:
                runs.append(RunFile(variant, extra))
    return runs


def _frame(runs: list[RunFile]) -> pd.DataFrame:
    rows = [dict(record, run_dir=str(run.path.parent)) for run in runs for record in run.records]
    return pd.DataFrame(rows, columns=list(RECORD_FIELDS) + ["run_dir"])


def load_runs(runs_dir: Path, warn: Warn = warn_stderr) -> pd.DataFrame:
    """All records of the readable runs (schema 2 columns, ``run_dir`` added)."""
    return _frame(read_runs(runs_dir, warn))


def _with_defaults(records: pd.DataFrame) -> pd.DataFrame:
    """Records given as a frame may lack the schema-2 fields (a schema-1 frame): fill them."""
    records = records.copy()
    if "schema_version" not in records:
        records["schema_version"] = "1"
    for column in ("limit", "batch_size"):
        if column not in records:
            records[column] = None
        records[column] = records[column].astype("Int64")
    records["schema_version"] = records["schema_version"].astype(str)
    return records


def _seeds(values: pd.Series) -> str:
    return ",".join(str(int(s)) for s in sorted(values))


def _joined(values: pd.Series) -> str:
    return ",".join(str(v) for v in sorted(set(values.dropna().astype(int))))


def aggregate(records: pd.DataFrame) -> pd.DataFrame:
    """Per group of :data:`GROUP_KEYS`: mean, sample standard deviation (ddof=1; empty for one run),
    the number of runs, the seeds (``duplicate_seed`` when one appears twice) and the batch sizes."""
    if records.empty:
        return pd.DataFrame(columns=AGGREGATE_COLUMNS)
    grouped = _with_defaults(records).groupby(GROUP_KEYS, dropna=False, sort=False)
    out = grouped.agg(mean=("value", "mean"), std=("value", "std"), n_runs=("value", "size"),
                      n_seeds=("seed", "nunique"), seeds=("seed", _seeds),
                      batch_size=("batch_size", _joined)).reset_index()
    out["duplicate_seed"] = out["n_seeds"] < out["n_runs"]
    out = out.astype({"limit": "Int64", "n_eval": "int64", "num_parts": "int64"})
    out = out.sort_values(GROUP_KEYS, na_position="first", kind="stable").reset_index(drop=True)
    return out[AGGREGATE_COLUMNS]


def load_paper(paper_dir: Path) -> pd.DataFrame:
    frames = [pd.read_csv(p, dtype={"num_parts": "Int64"}, keep_default_na=False, na_values=[""])
              for p in sorted(Path(paper_dir).glob("*.csv"))]
    if not frames:
        return pd.DataFrame(columns=PAPER_COLUMNS)
    paper = pd.concat(frames, ignore_index=True)
    missing = set(PAPER_COLUMNS) - set(paper.columns)
    if missing:
        raise ValueError(f"paper CSVs lack columns {sorted(missing)}")
    for column, default in OPTIONAL_PAPER_COLUMNS.items():
        paper[column] = paper[column].fillna(default) if column in paper.columns else default
    return paper[list(PAPER_COLUMNS) + list(OPTIONAL_PAPER_COLUMNS)]


def _fmt(value: float, digits: int = 4) -> str:
    return "" if pd.isna(value) else f"{value:.{digits}f}"


def _runs_note(row: pd.Series) -> str:
    """``n=3`` or ``n=2, seeds 0,0, duplicate seed``."""
    note = f"n={int(row['n_runs'])}"
    if row["duplicate_seed"]:
        note += f", seeds {row['seeds']}, duplicate seed"
    return note


def _cell(row: pd.Series) -> str:
    std = "" if pd.isna(row["std"]) else f" ± {row['std']:.4f}"
    return f"{row['mean']:.4f}{std} ({_runs_note(row)})"


def arm_label(method: str, preset: str, num_parts, limit=None, schema_version: str = "2") -> str:
    """A row of ``ours``: ``method [preset] K=k``, `` limit=N`` for a limited run, `` (schema 1)``
    for records that did not record their limit."""
    label = f"{method} [{preset}] K={num_parts}"
    if limit is not None and not pd.isna(limit):
        label += f" limit={int(limit)}"
    if str(schema_version) == "1":
        label += " (schema 1)"
    return label


def pivot_ours(agg: pd.DataFrame) -> pd.DataFrame:
    """Rows: method [preset] K (limit, schema); columns: protocol / metric with ↑ or ↓ (the
    protocol's version too where runs of two versions are present). Groups that still share a
    cell (another split or n_eval) are listed in it side by side, each with its split and n_eval."""
    if agg.empty:
        return pd.DataFrame()
    agg = agg.copy()
    agg["row"] = [arm_label(r.method, r.preset, r.num_parts, r.limit, r.schema_version)
                  for r in agg.itertuples(index=False)]
    versions = agg.groupby("protocol")["protocol_version"].nunique()
    protocol = agg["protocol"].where(agg["protocol"].map(versions) == 1,
                                     agg["protocol"] + " v" + agg["protocol_version"].astype(str))
    agg["column"] = protocol + " / " + agg["metric"] + agg["higher_is_better"].map({True: " ↑", False: " ↓"})
    agg["cell"] = agg.apply(_cell, axis=1)
    shared = agg.groupby(["row", "column"])["cell"].transform("size") > 1
    agg.loc[shared, "cell"] = agg.loc[shared, "cell"] + " [" + agg.loc[shared, "split"] + ", n_eval=" \
        + agg.loc[shared, "n_eval"].astype(str) + "]"
    cells = agg.groupby(["row", "column"], sort=True)["cell"].agg("; ".join).reset_index()
    table = cells.pivot(index="row", columns="column", values="cell").fillna("")
    return table.sort_index().sort_index(axis=1)


def _ours_detail(row: pd.Series) -> str:
    """What the ours numbers are: ``v2, n_eval 300, n=3`` (+ seeds when one repeats, + schema 1)."""
    detail = f"v{row['protocol_version']}, n_eval {int(row['n_eval'])}, {_runs_note(row)}"
    return detail + (", schema 1" if str(row["schema_version"]) == "1" else "")


def paper_vs_ours(agg: pd.DataFrame, paper: pd.DataFrame) -> pd.DataFrame:
    """Outer join on (method, protocol, metric, K): paper value, ours mean ± std, Δ = ours - paper.

    Only full runs (no ``--limit``) are joined; ``ours_detail`` says which runs a number is from.
    Only rows of a paper's main setting are joined (see UNJOINED_SETTING_PREFIXES); the others
    are listed with their setting and empty ``ours`` columns.
    """
    ours = agg[agg["limit"].isna()] if "limit" in agg else agg
    ours = ours.rename(columns={"mean": "ours_mean", "std": "ours_std"})
    if ours.empty:
        ours = ours.assign(ours_detail=pd.Series(dtype=str))
    else:
        ours = ours.assign(ours_detail=ours.apply(_ours_detail, axis=1))
    ours = ours[["method", "protocol", "metric", "num_parts", "preset", "ours_mean", "ours_std", "n_runs",
                 "ours_detail"]]
    ours = ours.astype({"num_parts": "Int64"})
    theirs = paper.rename(columns={"value": "paper_value"})
    theirs = theirs.assign(method=theirs["method"].fillna("").astype(str),
                           setting=theirs.get("setting", pd.Series("", index=theirs.index)).fillna("").astype(str))
    theirs = theirs[~theirs["setting"].str.startswith(UNLISTED_SETTING_PREFIXES)]
    unjoined = theirs["setting"].str.startswith(UNJOINED_SETTING_PREFIXES)
    joined = theirs[~unjoined].merge(ours, on=["method", "protocol", "metric", "num_parts"], how="outer")
    if unjoined.any():
        joined = pd.concat([joined, theirs[unjoined]], ignore_index=True)
    joined["delta"] = joined["ours_mean"] - joined["paper_value"]
    for col in ("citation", "method_as_printed", "note", "preset", "method", "setting", "ours_detail"):
        joined[col] = joined[col].fillna("")
    joined["n_runs"] = joined["n_runs"].astype("Int64")
    joined["display_method"] = joined["method_as_printed"].where(joined["method_as_printed"] != "",
                                                                 joined["method"])
    columns = ["protocol", "metric", "num_parts", "display_method", "method", "preset", "citation", "setting",
               "paper_value", "ours_mean", "ours_std", "n_runs", "ours_detail", "delta", "note"]
    joined = joined[columns].sort_values(["protocol", "metric", "num_parts", "display_method", "preset",
                                          "citation", "setting", "ours_detail"], na_position="last")
    return joined.reset_index(drop=True)


def to_markdown(frame: pd.DataFrame, index: bool = False) -> str:
    if index:
        frame = frame.reset_index()
    header = [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for row in frame.itertuples(index=False):
        cells = []
        for value in row:
            if isinstance(value, float):
                cells.append(_fmt(value))
            else:
                cells.append("" if pd.isna(value) else str(value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# Per-image scores a run may hold next to metrics.json: one row per (split, image, metric) for the
# metrics that are means over images; ``metric`` is the metric's name in metrics.json.
PER_IMAGE_FILE = "scores_per_image.csv.gz"
PER_IMAGE_COLUMNS = ["split", "image_id", "metric", "value"]
CI_COLUMNS = ["protocol", "protocol_version", "split", "metric", "higher_is_better", "method_a", "method_b",
              "seeds", "n_images", "mean_a", "mean_b", "diff", "ci_low", "ci_high", "excludes_zero", "better"]


def _arm(record: dict) -> str:
    """The compared unit: a method at a preset and K, and its ``limit`` (one row of ``ours``)."""
    return arm_label(record["method"], record["preset"], record["num_parts"], record["limit"],
                     record["schema_version"])


def _limit_key(record: dict) -> str:
    """Runs are paired only within one key: full runs, runs of one ``--limit``, schema-1 runs (limit
    not recorded)."""
    if record["schema_version"] == "1":
        return "schema 1"
    return "" if record["limit"] is None else f"limit={record['limit']}"


def _per_image(path: Path) -> pd.DataFrame:
    try:
        frame = pd.read_csv(path, dtype={"split": str, "image_id": str, "metric": str}, keep_default_na=False,
                            na_values=[""])
    except (OSError, EOFError, ValueError, zlib.error) as exc:  # truncated gzip, not CSV, unreadable
        raise UserError(f"{path}: unreadable ({type(exc).__name__}: {exc})") from None
    if list(frame.columns) != PER_IMAGE_COLUMNS:
        raise UserError(f"{path}: columns {list(frame.columns)}, expected {PER_IMAGE_COLUMNS}")
    frame["value"] = pd.to_numeric(frame["value"], errors="coerce")
    return frame.dropna(subset=["value"])


def _load_per_image_runs(runs_dir: Path, runs: list[RunFile] | None = None) -> tuple[pd.DataFrame, dict, list[str]]:
    """Per-image rows of every run that has them (tagged with protocol, limit, arm and seed), the
    metrics' directions, and notes on the runs left out. ``runs``: the runs already read (default:
    read ``runs_dir`` again, without warnings: ``tables`` has named the bad files)."""
    runs_dir = Path(runs_dir)
    if runs is None:
        runs = read_runs(runs_dir, warn=_quiet)
    chosen: dict[tuple, Path] = {}
    directions: dict[tuple, bool] = {}
    missing, duplicates = [], []

    def rel(path: Path) -> str:
        try:
            return path.relative_to(runs_dir).as_posix()
        except ValueError:
            return path.as_posix()

    for run in runs:
        run_dir = run.path.parent
        if not (run_dir / PER_IMAGE_FILE).is_file():
            missing.append(rel(run_dir))
            continue
        first = run.records[0]
        protocol = (first["protocol"], str(first["protocol_version"]))
        for r in run.records:
            directions.setdefault((*protocol, r["split"], r["metric"]), bool(r["higher_is_better"]))
        key = (*protocol, _limit_key(first), _arm(first), int(first["seed"]))
        if key in chosen:  # a rerun of the same seed: the later run directory (timestamped names) wins
            duplicates.append(rel(chosen[key]))
        chosen[key] = run_dir
    frames = [_per_image(run_dir / PER_IMAGE_FILE).assign(protocol=k[0], protocol_version=k[1], limit=k[2],
                                                          arm=k[3], seed=k[4])
              for k, run_dir in sorted(chosen.items())]
    rows = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=PER_IMAGE_COLUMNS + ["protocol", "protocol_version", "limit", "arm", "seed"])
    notes = []
    if missing:
        notes.append(f"note: {len(missing)} run(s) without {PER_IMAGE_FILE} skipped: {', '.join(missing)}")
    if duplicates:
        notes.append(f"note: {len(duplicates)} run(s) superseded by a later run of the same seed: "
                     f"{', '.join(duplicates)}")
    return rows, directions, notes


def _seed_means(rows: pd.DataFrame, seeds: list[int]) -> pd.Series:
    """Per image id, the mean over ``seeds`` of one arm's values (images scored under every seed)."""
    table = rows[rows["seed"].isin(seeds)].pivot_table(index="image_id", columns="seed", values="value",
                                                       aggfunc="mean")
    return table.dropna().mean(axis=1)


def paired_ci(runs_dir: Path, resamples: int = RESAMPLES, seed: int = SEED,
              runs: list[RunFile] | None = None) -> tuple[pd.DataFrame, list[str]]:
    """Paired bootstrap intervals of ``A - B`` for every protocol, per-image metric and pair of arms
    (method [preset] K) of the same ``limit`` (schema-1 runs only with schema-1 runs) with shared seeds: per image id each arm's values are
    averaged over the shared seeds, the differences are taken on the images both have, and the mean
    difference is bootstrapped over image ids (``resamples`` draws, ``numpy.random.default_rng(seed)``)."""
    rows, directions, notes = _load_per_image_runs(runs_dir, runs)
    out = []
    for (protocol, version, _limit, split, metric), group in rows.groupby(
            ["protocol", "protocol_version", "limit", "split", "metric"], sort=True):
        hib = directions.get((protocol, version, split, metric))
        seeds = {arm: set(g["seed"]) for arm, g in group.groupby("arm")}
        for arm_a, arm_b in itertools.combinations(sorted(seeds), 2):
            shared = sorted(seeds[arm_a] & seeds[arm_b])
            if not shared:
                notes.append(f"note: {protocol} {split}/{metric}: {arm_a} and {arm_b} share no seed, not compared")
                continue
            a = _seed_means(group[group["arm"] == arm_a], shared)
            b = _seed_means(group[group["arm"] == arm_b], shared)
            ids = sorted(set(a.index) & set(b.index))
            if not ids:
                notes.append(f"note: {protocol} {split}/{metric}: {arm_a} and {arm_b} share no image, not compared")
                continue
            ci = paired_bootstrap(a[ids].to_numpy(), b[ids].to_numpy(), resamples=resamples, seed=seed)
            better = ""
            if ci.excludes_zero and hib is not None:
                better = arm_a if (ci.mean > 0) == hib else arm_b
            out.append(dict(protocol=protocol, protocol_version=version, split=split, metric=metric,
                            higher_is_better=hib, method_a=arm_a, method_b=arm_b,
                            seeds=",".join(str(s) for s in shared), n_images=ci.n, mean_a=float(a[ids].mean()),
                            mean_b=float(b[ids].mean()), diff=ci.mean, ci_low=ci.low, ci_high=ci.high,
                            excludes_zero=ci.excludes_zero, better=better))
    return pd.DataFrame(out, columns=CI_COLUMNS), notes


def write_text_atomic(path: Path, text: str) -> Path:
    """Write through a temporary file in the same folder and ``os.replace``: a reader (or a killed
    ``tables``) sees the old file or the new one, never a part."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "x", encoding="utf-8", newline="") as fh:
            fh.write(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _write_frame(out_dir: Path, name: str, frame: pd.DataFrame, index: bool) -> list[Path]:
    csv = frame.to_csv(None, index=index, float_format="%.6g", lineterminator="\n")
    return [write_text_atomic(out_dir / f"{name}.csv", csv),
            write_text_atomic(out_dir / f"{name}.md", to_markdown(frame, index=index))]


def write_tables(runs_dir: Path, paper_dir: Path, out_dir: Path, *, warn: Warn = warn_stderr,
                 runs: list[RunFile] | None = None) -> list[Path]:
    """``ours``, ``paper_vs_ours`` and ``runs_aggregated`` (``.md`` and ``.csv``) in ``out_dir``.
    ``runs_dir`` must be a folder (``UserError``); a bad ``metrics.json`` is one ``warn`` line."""
    if runs is None:
        runs = read_runs(_runs_folder(Path(runs_dir)), warn)
    out_dir = out_folder(Path(out_dir))
    agg = aggregate(_frame(runs))
    paper = load_paper(paper_dir)
    outputs = {
        "ours": (pivot_ours(agg), True),
        "paper_vs_ours": (paper_vs_ours(agg, paper), False),
        "runs_aggregated": (agg, False),
    }
    written = []
    for name, (frame, index) in outputs.items():
        written += _write_frame(out_dir, name, frame, index)
    return written


def write_ci_tables(runs_dir: Path, out_dir: Path, resamples: int = RESAMPLES, seed: int = SEED, *,
                    runs: list[RunFile] | None = None) -> tuple[list[Path], pd.DataFrame, list[str]]:
    """``ci.csv`` and ``ci.md`` from :func:`paired_ci`; returns the files, the table and the notes."""
    out_dir = out_folder(Path(out_dir))
    frame, notes = paired_ci(runs_dir, resamples=resamples, seed=seed, runs=runs)
    return _write_frame(out_dir, "ci", frame, False), frame, notes


# ---------------------------------------------------------------- the ``tables`` command


def _runs_folder(path: Path) -> Path:
    if not path.is_dir():
        raise UserError(f"--runs {path}: {'not a folder' if path.exists() else 'no such folder'}")
    return path


def out_folder(path: Path, flag: str = "--out") -> Path:
    """``path`` as an existing folder (created), or a one-line error naming ``flag``."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{flag} {path}: not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"{flag} {path}: cannot create it ({exc.strerror or exc})") from None
    return path


def resolve_paths(runs: str | os.PathLike | None = None, paper: str | os.PathLike | None = None,
                  out: str | os.PathLike | None = None, *, root: Path = REPO_ROOT,
                  warn: Warn = warn_stderr) -> tuple[Path, Path, Path]:
    """The ``tables`` folders. A path given is taken as given (relative to the cwd); a default is the
    project's (``root``): ``runs/``, ``results/paper/``, ``runs/tables/`` — never the committed
    ``results/tables/``. A missing ``--runs`` or ``--paper`` given, or an ``--out`` that is a file, is
    a ``UserError``; a missing default ``results/paper`` is one warning (no papers' numbers)."""
    runs_dir = _runs_folder(Path(runs) if runs is not None else root / DEFAULT_RUNS)
    if paper is not None:
        paper_dir = Path(paper)
        if not paper_dir.is_dir():
            raise UserError(f"--paper {paper_dir}: {'not a folder' if paper_dir.exists() else 'no such folder'} "
                            "(an empty folder tabulates without the papers' numbers)")
    else:
        paper_dir = root / DEFAULT_PAPER
        if not paper_dir.is_dir():
            warn(f"{paper_dir}: no such folder, tables without the papers' numbers (give --paper DIR)")
    out_dir = Path(out) if out is not None else root / DEFAULT_OUT
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--out {out_dir}: not a folder")
    return runs_dir, paper_dir, out_dir


def run_tables(runs: str | os.PathLike | None = None, paper: str | os.PathLike | None = None,
               out: str | os.PathLike | None = None, *, show: bool = False, ci: bool = False,
               ci_resamples: int = RESAMPLES) -> int:
    """``python -m benchmark tables``: resolve the folders, read every run once (one warning line on
    stderr per file left out), write the tables (and with ``ci`` the paired intervals), print what
    was written. Returns the exit code (0); bad arguments are a ``UserError``."""
    if ci and ci_resamples < 1:
        raise UserError(f"--ci-resamples must be at least 1, got {ci_resamples}")
    runs_dir, paper_dir, out_dir = resolve_paths(runs, paper, out)
    loaded = read_runs(runs_dir)
    if not loaded and not any(runs_dir.glob("**/metrics.json")):
        warn_stderr(f"{runs_dir}: no run folder (no metrics.json) found; the tables hold only the papers' numbers")
    for path in write_tables(runs_dir, paper_dir, out_dir, runs=loaded):
        print(f"wrote {path}")
    if show:
        print((out_dir / "ours.md").read_text(encoding="utf-8"))
    if ci:
        written, frame, notes = write_ci_tables(runs_dir, out_dir, resamples=ci_resamples, runs=loaded)
        for note in notes:
            print(note)
        for path in written:
            print(f"wrote {path}")
        print(f"paired bootstrap 95% CI of A - B over image ids ({ci_resamples} resamples, "
              f"per-image values averaged over the shared seeds):")
        print(to_markdown(frame) if not frame.empty else "(no pair of methods with per-image scores on shared seeds)")
    return 0
