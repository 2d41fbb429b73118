"""A reproduced table in the paper's layout: ``<TABLE>.md``, ``.csv`` and ``.tex``.

Each cell is "ours | paper | Δ": ours = mean ± sample std over the cell's finished runs and their
count, aggregated by ``benchmark.tables.aggregate`` (the ``tables`` command's own function, so
the numbers are the ones ``tables`` prints for the same runs); paper = the published number
(``table_manifest.paper_values``); Δ = ours − paper. A cell without runs says why (``needs
celeba_wild: prepare celeba_wild``, ``not meaningful: ...``, ``failed``); a cited-only row shows
the paper's number only. The best value of a column (per row group with ``bold =
"best_per_group"``) is bold, the paper's and ours separately, compared at the printed decimals.

Rendering is a pure function of the plan, the run folders and the papers' CSVs: rows and columns
in the manifest's order, fixed number formats, no dates, so the same inputs give byte-identical
files.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from segbench.benchmark.reproduce import DONE, MISSING_DATA, RESUME, RUNNING, TablePlan
from segbench.benchmark.table_manifest import Column, Row, paper_values
from segbench.benchmark.tables import aggregate, load_runs, out_folder, write_text_atomic

OK, PARTIAL, CITED, NOT_MEANINGFUL = "ok", "partial", "cited", "not meaningful"
CSV_COLUMNS = ["table", "row_id", "row_group", "row_label", "method", "column_id", "column_group", "column_label",
               "protocol", "options", "metric", "num_parts", "higher_is_better", "status", "note", "ours_mean",
               "ours_std", "ours_n", "ours_seeds", "paper_value", "delta", "ours_best", "paper_best", "runs"]


@dataclass(frozen=True)
class CellValue:
    row: Row
    column: Column
    status: str  # OK, PARTIAL, CITED, NOT_MEANINGFUL, or why there is no number (missing data, failed, ...)
    note: str  # the reason shown in the cell
    mean: float | None
    std: float | None
    n: int  # runs averaged
    expected: int  # runs the cell needs (seeds)
    seeds: str
    paper: float | None
    runs: tuple[str, ...]  # run folders, relative to --out


def _relative(folder: Path, out: Path) -> str:
    try:
        return folder.relative_to(out).as_posix()
    except ValueError:
        return folder.as_posix()


def _no_number(plan: TablePlan, statuses: list, failed: dict[str, str]) -> tuple[str, str]:
    """(status, note) of a cell whose runs are not all finished: the most telling reason first."""
    for s in statuses:
        if s.status == MISSING_DATA:
            return MISSING_DATA, f"needs {s.cell.dataset}: prepare {s.cell.dataset}"
    if any(s.cell.id in failed for s in statuses):
        return "failed", "failed"
    for status, note in ((RUNNING, "running"), (RESUME, "interrupted")):
        if any(s.status == status for s in statuses):
            return status, note
    return "not run", "not run"


def collect_cells(plan: TablePlan, failed: dict[str, str] | None = None, paper_dir: Path | None = None,
                  warn=None) -> list[CellValue]:
    """Every (row, column) of the table with its aggregated runs and the paper's number.
    ``failed``: cell id -> error of the cells that failed in this session (or the last one)."""
    failed = failed or {}
    manifest = plan.manifest
    papers = paper_values(manifest, paper_dir) if paper_dir is not None else paper_values(manifest)
    rows = {r.id: r for r in manifest.rows}
    columns = {c.id: c for c in manifest.columns}
    statuses = {s.cell.id: s for s in plan.cells}
    records: dict[Path, pd.DataFrame] = {}
    out = Path(plan.out)
    values = []
    for ref in plan.table_cells:
        row, column = rows[ref.row_id], columns[ref.column_id]
        paper = papers.get((row.id, column.id))
        if not ref.cell_ids:
            kind, note = (CITED, ref.reason) if row.cited or column.cited else (NOT_MEANINGFUL, f"n/a: {ref.reason}")
            values.append(CellValue(row, column, kind, note, None, None, 0, 0, "", paper, ()))
            continue
        cells = [statuses[i] for i in ref.cell_ids]
        done = [s.folder for s in cells if s.status == DONE and s.folder is not None and s.cell.id not in failed]
        frames = []
        for folder in done:
            if folder not in records:
                records[folder] = load_runs(folder, warn) if warn else load_runs(folder)
            frames.append(records[folder])
        frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
        agg = aggregate(frame[frame["metric"] == column.metric]) if len(frame) else pd.DataFrame()
        runs = tuple(_relative(f, out) for f in done)
        if len(agg) == 1:
            group = agg.iloc[0]
            std = None if pd.isna(group["std"]) else float(group["std"])
            n = int(group["n_runs"])
            status, note = (OK, "") if n == len(cells) else (PARTIAL, _no_number(plan, cells, failed)[1])
            values.append(CellValue(row, column, status, note, float(group["mean"]), std, n, len(cells),
                                    str(group["seeds"]), paper, runs))
        else:
            status, note = _no_number(plan, cells, failed) if len(agg) == 0 else \
                ("mixed", "runs disagree on n_eval or K")
            values.append(CellValue(row, column, status, note, None, None, 0, len(cells), "", paper, runs))
    return values


# ---------------------------------------------------------------- best values


def _best(values: list[CellValue], plan: TablePlan, source: str) -> set[tuple[str, str]]:
    """(row id, column id) of the best ``source`` value ("paper" or "ours") per column (per row
    group with best_per_group), compared at the column's printed decimals; ties are all best."""
    rule = plan.manifest.layout.bold
    if rule == "none":
        return set()
    hib = dict(plan.higher_is_better)
    groups: dict[tuple, list[tuple[float, CellValue]]] = {}
    for v in values:
        number = v.paper if source == "paper" else v.mean
        if number is None:
            continue
        scope = (v.column.id, v.row.group if rule == "best_per_group" else "")
        groups.setdefault(scope, []).append((round(number, v.column.digits), v))
    best = set()
    for (column_id, _), entries in groups.items():
        target = (max if hib[column_id] else min)(n for n, _ in entries)
        best |= {(v.row.id, column_id) for n, v in entries if n == target}
    return best


def _number(value: float, digits: int) -> str:
    text = f"{value:.{digits}f}"
    return "0" + text[2:] if text.startswith("-0") and float(text) == 0 else text  # no "-0.00"


def ours_text(v: CellValue, pm: str = "±") -> str:
    if v.mean is None:
        return "" if v.status == CITED else v.note
    d = v.column.digits
    text = _number(v.mean, d) + (f" {pm} {_number(v.std, d)}" if v.std is not None else "")
    count = f"{v.n}" if v.status == OK else f"{v.n} of {v.expected}: {v.note}"
    return f"{text} ({count})"


def paper_text(v: CellValue) -> str:
    return "-" if v.paper is None else _number(v.paper, v.column.digits)


def delta(v: CellValue) -> float | None:
    return None if v.mean is None or v.paper is None else v.mean - v.paper


def delta_text(v: CellValue) -> str:
    d = delta(v)
    return "" if d is None else f"{'+' if round(d, v.column.digits) >= 0 else '-'}{_number(abs(d), v.column.digits)}"


def column_title(column: Column, higher_is_better: bool) -> str:
    unit = f" ({column.unit})" if column.unit else ""
    return f"{column.label}{unit} {'↑' if higher_is_better else '↓'}"


# ---------------------------------------------------------------- formats


def _header_note(plan: TablePlan) -> str:
    seeds = " ".join(str(s) for s in plan.seeds)
    limit = f" --limit {plan.limit}" if plan.limit else ""
    what = "ours = mean ± sample std over seeds (runs)" + (", paper = the published number, Δ = ours - paper"
                                                          if plan.manifest.has_paper else "")
    return f"`python -m segbench reproduce {plan.manifest.id} --preset {plan.preset} --seeds {seeds}{limit}`: {what}."


def render_markdown(plan: TablePlan, values: list[CellValue]) -> str:
    m, hib = plan.manifest, dict(plan.higher_is_better)
    has_paper, by_cell = m.has_paper, {(v.row.id, v.column.id): v for v in values}
    best_paper, best_ours = _best(values, plan, "paper"), _best(values, plan, "ours")
    groups = any(r.group for r in m.rows)
    header = ([m.layout.row_group_header or "group"] if groups else []) + ["method"]
    for c in m.columns:
        title = " ".join(p for p in (c.group, column_title(c, hib[c.id])) if p)
        header += [f"{title}: ours", f"{title}: paper", f"{title}: Δ"] if has_paper else [title]
    lines = [f"# {m.title}", ""] + ([m.caption, ""] if m.caption else []) + [_header_note(plan), ""]
    lines += ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for row in m.rows:
        cells = ([row.group] if groups else []) + [row.label]
        for c in m.columns:
            v, key = by_cell[(row.id, c.id)], (row.id, c.id)
            ours = ours_text(v)
            ours = f"**{ours}**" if key in best_ours else ours
            if has_paper:
                paper = f"**{paper_text(v)}**" if key in best_paper else paper_text(v)
                cells += [ours, paper, delta_text(v)]
            else:
                cells.append(ours)
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    notes = list(m.notes) + [f"{r.label}: {r.note}" for r in m.rows if r.note]
    if notes:
        lines += ["", "Notes:", ""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def render_csv(plan: TablePlan, values: list[CellValue]) -> str:
    best_paper, best_ours, hib = _best(values, plan, "paper"), _best(values, plan, "ours"), dict(plan.higher_is_better)
    rows = []
    for v in values:
        key = (v.row.id, v.column.id)
        rows.append(dict(table=plan.manifest.id, row_id=v.row.id, row_group=v.row.group, row_label=v.row.label,
                         method=v.row.method or "", column_id=v.column.id, column_group=v.column.group,
                         column_label=v.column.label, protocol=v.column.protocol or v.column.paper_protocol,
                         options=",".join(f"{k}={x}" for k, x in v.column.options), metric=v.column.metric,
                         num_parts=v.column.num_parts, higher_is_better=hib[v.column.id], status=v.status,
                         note=v.note, ours_mean=v.mean, ours_std=v.std, ours_n=v.n, ours_seeds=v.seeds,
                         paper_value=v.paper, delta=delta(v), ours_best=key in best_ours,
                         paper_best=key in best_paper, runs=";".join(v.runs)))
    frame = pd.DataFrame(rows, columns=CSV_COLUMNS).astype({"num_parts": "Int64", "ours_n": "int64"})
    return frame.to_csv(None, index=False, float_format="%.6g", lineterminator="\n")


TEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
               "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "±": r"$\pm$", "Δ": r"$\Delta$",
               "↑": r"$\uparrow$", "↓": r"$\downarrow$", "σ": r"$\sigma$", "λ": r"$\lambda$", "ϵ": r"$\epsilon$",
               "β": r"$\beta$", "†": r"\dag{}", "⋄": r"$\diamond$", "∗": r"$*$", "−": "-"}


def tex_escape(text: str) -> str:
    return "".join(TEX_ESCAPES.get(ch, ch) for ch in text)


def render_tex(plan: TablePlan, values: list[CellValue]) -> str:
    """A ``tabular`` (no packages needed): a header row per column group, then titles, then
    ours / paper / Δ; every row has the same number of cells."""
    m, hib = plan.manifest, dict(plan.higher_is_better)
    has_paper, by_cell = m.has_paper, {(v.row.id, v.column.id): v for v in values}
    best_paper, best_ours = _best(values, plan, "paper"), _best(values, plan, "ours")
    lead = 2 if any(r.group for r in m.rows) else 1
    span = 3 if has_paper else 1
    spec = "l" * lead + "".join("|" + "c" * span for _ in m.columns)
    lines = [f"% {tex_escape(m.title)}", f"% generated by: python -m segbench reproduce {m.id}; do not edit",
             f"\\begin{{tabular}}{{{spec}}}", "\\hline"]
    if any(c.group for c in m.columns):
        cells, i = [""] * lead, 0
        while i < len(m.columns):
            j = i
            while j < len(m.columns) and m.columns[j].group == m.columns[i].group:
                j += 1
            cells.append(f"\\multicolumn{{{(j - i) * span}}}{{c}}{{{tex_escape(m.columns[i].group)}}}")
            i = j
        lines.append(" & ".join(cells) + " \\\\")
    titles = ([tex_escape(m.layout.row_group_header)] if lead == 2 else []) + ["Method"]
    titles += [f"\\multicolumn{{{span}}}{{c}}{{{tex_escape(column_title(c, hib[c.id]))}}}" if span > 1
               else tex_escape(column_title(c, hib[c.id])) for c in m.columns]
    lines.append(" & ".join(titles) + " \\\\")
    if has_paper:
        lines.append(" & ".join([""] * lead + ["ours", "paper", "$\\Delta$"] * len(m.columns)) + " \\\\")
    lines.append("\\hline")
    for row in m.rows:
        cells = ([tex_escape(row.group)] if lead == 2 else []) + [tex_escape(row.label)]
        for c in m.columns:
            v, key = by_cell[(row.id, c.id)], (row.id, c.id)
            ours = tex_escape(ours_text(v))
            cells.append(f"\\textbf{{{ours}}}" if key in best_ours and ours else ours)
            if has_paper:
                paper = tex_escape(paper_text(v))
                cells += [f"\\textbf{{{paper}}}" if key in best_paper else paper, tex_escape(delta_text(v))]
        lines.append(" & ".join(cells) + " \\\\")
    lines += ["\\hline", "\\end{tabular}"]
    return "\n".join(lines) + "\n"


def render_all(plan: TablePlan, values: list[CellValue]) -> dict[str, str]:
    return {"md": render_markdown(plan, values), "csv": render_csv(plan, values), "tex": render_tex(plan, values)}


def write_rendered(table_id: str, rendered: dict[str, str], out_dir: Path) -> list[Path]:
    out_dir = out_folder(out_dir, "--tables-out")
    return [write_text_atomic(out_dir / f"{table_id}.{suffix}", text) for suffix, text in sorted(rendered.items())]
