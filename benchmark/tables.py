"""Comparison tables: every run's records aggregated over seeds (mean ± sample std, count),
pivoted method × (protocol, metric), and joined with the papers' reported numbers.

With ``ci=True`` (``tables --ci``) it adds ``ci.md``/``ci.csv``: paired bootstrap 95% intervals of
the difference between two methods on the same protocol and seeds, from the runs' per-image scores
(:func:`paired_ci`).

Outputs are deterministic (sorted rows, fixed number formats, no timestamps, a fixed bootstrap
seed), so the same runs give byte-identical files. Every file is written atomically.
"""
from __future__ import annotations

import itertools
import json
import os
import secrets
from pathlib import Path

import pandas as pd

from segbench.benchmark.errors import UserError
from segbench.benchmark.paired_bootstrap import RESAMPLES, SEED, paired_bootstrap

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
GROUP_KEYS = ["protocol", "protocol_version", "metric", "split", "higher_is_better", "method", "preset",
              "num_parts"]


def load_runs(runs_dir: Path) -> pd.DataFrame:
    rows = []
    for path in sorted(Path(runs_dir).glob("**/metrics.json")):
        rows.extend(json.loads(path.read_text()))
    return pd.DataFrame(rows)


def aggregate(records: pd.DataFrame) -> pd.DataFrame:
    """Mean, sample standard deviation (ddof=1; empty for one seed) and count over seeds."""
    if records.empty:
        return pd.DataFrame(columns=GROUP_KEYS + ["mean", "std", "n_seeds", "n_eval"])
    grouped = records.groupby(GROUP_KEYS, dropna=False)
    out = grouped.agg(mean=("value", "mean"), std=("value", "std"), n_seeds=("seed", "nunique"),
                      n_eval=("n_eval", "max")).reset_index()
    return out.sort_values(GROUP_KEYS).reset_index(drop=True)


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


def _cell(row: pd.Series) -> str:
    std = "" if pd.isna(row["std"]) else f" ± {row['std']:.4f}"
    return f"{row['mean']:.4f}{std} (n={int(row['n_seeds'])})"


def pivot_ours(agg: pd.DataFrame) -> pd.DataFrame:
    """Rows: method [preset] K; columns: protocol / metric with ↑ or ↓."""
    if agg.empty:
        return pd.DataFrame()
    agg = agg.copy()
    agg["row"] = agg["method"] + " [" + agg["preset"] + "] K=" + agg["num_parts"].astype(str)
    agg["column"] = (agg["protocol"] + " / " + agg["metric"]
                     + agg["higher_is_better"].map({True: " ↑", False: " ↓"}))
    agg["cell"] = agg.apply(_cell, axis=1)
    table = agg.pivot(index="row", columns="column", values="cell").fillna("")
    return table.sort_index().sort_index(axis=1)


def paper_vs_ours(agg: pd.DataFrame, paper: pd.DataFrame) -> pd.DataFrame:
    """Outer join on (method, protocol, metric, K): paper value, ours mean ± std, Δ = ours - paper.

    Only rows of a paper's main setting are joined (see UNJOINED_SETTING_PREFIXES); the others
    are listed with their setting and empty ``ours`` columns.
    """
    ours = agg.rename(columns={"mean": "ours_mean", "std": "ours_std"})
    ours = ours[["method", "protocol", "metric", "num_parts", "preset", "ours_mean", "ours_std", "n_seeds"]]
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
    for col in ("citation", "method_as_printed", "note", "preset", "method", "setting"):
        joined[col] = joined[col].fillna("")
    joined["display_method"] = joined["method_as_printed"].where(joined["method_as_printed"] != "",
                                                                 joined["method"])
    columns = ["protocol", "metric", "num_parts", "display_method", "method", "preset", "citation", "setting",
               "paper_value", "ours_mean", "ours_std", "n_seeds", "delta", "note"]
    joined = joined[columns].sort_values(["protocol", "metric", "num_parts", "display_method", "preset",
                                          "citation", "setting"], na_position="last")
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
    """The compared unit: a method at a preset and K (one row of ``ours``)."""
    return f"{record['method']} [{record['preset']}] K={record['num_parts']}"


def _per_image(path: Path) -> pd.DataFrame:
    frame = pd.read_csv(path, dtype={"split": str, "image_id": str, "metric": str}, keep_default_na=False,
                        na_values=[""])
    if list(frame.columns) != PER_IMAGE_COLUMNS:
        raise UserError(f"{path}: columns {list(frame.columns)}, expected {PER_IMAGE_COLUMNS}")
    frame["value"] = pd.to_numeric(frame["value"], errors="coerce")
    return frame.dropna(subset=["value"])


def _load_per_image_runs(runs_dir: Path) -> tuple[pd.DataFrame, dict, list[str]]:
    """Per-image rows of every run that has them (tagged with protocol, arm and seed), the metrics'
    directions, and notes on the runs left out."""
    runs_dir = Path(runs_dir)
    chosen: dict[tuple, Path] = {}
    directions: dict[tuple, bool] = {}
    missing, duplicates = [], []
    for metrics_path in sorted(runs_dir.glob("**/metrics.json")):
        records = json.loads(metrics_path.read_text())
        if not records:
            continue
        run_dir = metrics_path.parent
        if not (run_dir / PER_IMAGE_FILE).is_file():
            missing.append(run_dir.relative_to(runs_dir).as_posix())
            continue
        first = records[0]
        protocol = (first["protocol"], str(first["protocol_version"]))
        for r in records:
            if "higher_is_better" in r:
                directions.setdefault((*protocol, r["split"], r["metric"]), bool(r["higher_is_better"]))
        key = (*protocol, _arm(first), int(first["seed"]))
        if key in chosen:  # a rerun of the same seed: the later run directory (timestamped names) wins
            duplicates.append(chosen[key].relative_to(runs_dir).as_posix())
        chosen[key] = run_dir
    frames = [_per_image(run_dir / PER_IMAGE_FILE).assign(protocol=k[0], protocol_version=k[1], arm=k[2], seed=k[3])
              for k, run_dir in sorted(chosen.items())]
    rows = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=PER_IMAGE_COLUMNS + ["protocol", "protocol_version", "arm", "seed"])
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


def paired_ci(runs_dir: Path, resamples: int = RESAMPLES, seed: int = SEED) -> tuple[pd.DataFrame, list[str]]:
    """Paired bootstrap intervals of ``A - B`` for every protocol, per-image metric and pair of arms
    (method [preset] K) with shared seeds: per image id each arm's values are averaged over the shared
    seeds, the differences are taken on the images both have, and the mean difference is bootstrapped
    over image ids (``resamples`` draws, ``numpy.random.default_rng(seed)``)."""
    rows, directions, notes = _load_per_image_runs(runs_dir)
    out = []
    for (protocol, version, split, metric), group in rows.groupby(["protocol", "protocol_version", "split", "metric"],
                                                                  sort=True):
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


def write_tables(runs_dir: Path, paper_dir: Path, out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    agg = aggregate(load_runs(runs_dir))
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


def write_ci_tables(runs_dir: Path, out_dir: Path, resamples: int = RESAMPLES,
                    seed: int = SEED) -> tuple[list[Path], pd.DataFrame, list[str]]:
    """``ci.csv`` and ``ci.md`` from :func:`paired_ci`; returns the files, the table and the notes."""
    out_dir.mkdir(parents=True, exist_ok=True)
    frame, notes = paired_ci(runs_dir, resamples=resamples, seed=seed)
    return _write_frame(out_dir, "ci", frame, False), frame, notes
