"""Comparison tables: every run's records aggregated over seeds (mean ± sample std, count),
pivoted method × (protocol, metric), and joined with the papers' reported numbers.

Outputs are deterministic (sorted rows, fixed number formats, no timestamps), so the same
runs give byte-identical files.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

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
        csv_path, md_path = out_dir / f"{name}.csv", out_dir / f"{name}.md"
        frame.to_csv(csv_path, index=index, float_format="%.6g", lineterminator="\n")
        md_path.write_text(to_markdown(frame, index=index))
        written += [csv_path, md_path]
    return written
