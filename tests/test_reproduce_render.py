"""Table manifests and their rendering without runs (issue 18): every manifest in
results/paper/tables loads and plans against the registries, joins every published number of the
tables it covers, and renders byte-identical, well-formed Markdown / CSV / LaTeX."""
import io
import re
from pathlib import Path

import pandas as pd
import pytest

from segbench.benchmark.errors import UserError
from segbench.benchmark.reproduce import MISSING_DATA, RUN, plan_table
from segbench.benchmark.table_manifest import (PAPER_DIR, load_manifest, manifest_names, paper_values,
                                               parse_manifest)
from segbench.benchmark.table_render import collect_cells, render_all

NAMES = manifest_names()
# Published tables each manifest set must cover (paper CSV -> its table labels).
COVERED = {"ganseg_main.csv": {"Tab.1", "Tab.2", "Tab.3", "§4.4"},
           "ganseg_supp.csv": {"Tab.2", "Tab.3", "Tab.4", "§C"},
           "melas_kyriazi.csv": {"Tab.1"},
           "liu.csv": {"Tab.1", "Tab.2", "Tab.3", "Tab.4", "Tab.5"}}


def test_the_required_tables_have_manifests():
    assert {"ganseg_tab1", "ganseg_tab2", "ganseg_tab3", "ganseg_supp_tab2", "ganseg_supp_tab3", "ganseg_supp_tab4",
            "ganseg_supp_fid", "melas_tab1", "melas_tab1_saliency", "liu_tab1", "liu_tab3", "liu_tab4", "liu_tab5",
            "standins"} <= set(NAMES)


def test_every_published_number_of_the_covered_tables_is_in_a_manifest():
    joined = set()
    for name in NAMES:
        manifest = load_manifest(name)
        rows, columns = {r.id: r for r in manifest.rows}, {c.id: c for c in manifest.columns}
        for (row_id, column_id), value in paper_values(manifest).items():
            column = columns[column_id]
            joined.add((manifest.paper_csv, manifest.paper_table, rows[row_id].paper_name, column.paper_protocol,
                        column.paper_metric, value))
    for csv, tables in COVERED.items():
        paper = pd.read_csv(PAPER_DIR / csv, keep_default_na=False)
        paper = paper[paper["table"].isin(tables) & ~paper["setting"].str.startswith("hyperparameter")]
        missing = [tuple(r) for r in paper[["table", "method_as_printed", "protocol", "metric", "value"]].itertuples(index=False)
                   if (csv, r.table, r.method_as_printed, r.protocol, r.metric, float(r.value)) not in joined]
        assert not missing, (csv, missing[:5])


@pytest.fixture(scope="module")
def plans(tmp_path_factory):
    """Every manifest planned against an empty data root and an empty --out (no run anywhere)."""
    root = tmp_path_factory.mktemp("plans")
    (root / "no_data").mkdir()
    return {name: plan_table(load_manifest(name), out=str(root / "runs"), data_root=str(root / "no_data"))
            for name in NAMES}


@pytest.mark.parametrize("name", NAMES)
def test_manifest_plans_against_the_registries(name, plans):
    plan = plans[name]  # plan_table checks every protocol, option, metric and method name
    for status in plan.cells:
        assert status.status in (RUN, MISSING_DATA), (status.cell.id, status.status)
        assert not status.cell.config_error, (status.cell.id, status.cell.config_error)
        if status.cell.dataset != "synthetic_parts":
            assert status.status == MISSING_DATA and status.reason.startswith(f"needs {status.cell.dataset}: ")
    runnable = any(r.method for r in plan.manifest.rows) and any(c.protocol for c in plan.manifest.columns)
    assert bool(plan.cells) == runnable  # a table of paper-only columns (liu_tab4, liu_tab5) runs nothing


def test_standins_cover_every_implemented_method_on_three_benchmarks(plans):
    plan = plans["standins"]
    assert plan.preset == "quick" and plan.seeds == (0, 1, 2)
    pairs = {(c.cell.method, c.cell.protocol) for c in plan.cells}
    methods = {"centre_prior", "ganseg", "latent_direction", "liu_parts"}
    assert pairs == {(m, p) for m in methods for p in ("synthetic_parts", "faces_wild", "pascal_s")} \
        - {("latent_direction", "faces_wild")}
    assert len(plan.cells) == 33


def _tabular_rows(tex: str) -> tuple[int, list[str]]:
    lines = tex.splitlines()
    begin = next(i for i, line in enumerate(lines) if line.startswith("\\begin{tabular}"))
    end = lines.index("\\end{tabular}")
    spec = re.match(r"\\begin\{tabular\}\{([^}]*)\}$", lines[begin]).group(1)
    return sum(ch in "lcr" for ch in spec), [line for line in lines[begin + 1:end] if line != "\\hline"]


def _cells(line: str) -> int:
    body = line[:-len(" \\\\")]
    spans = 0
    for cell in re.split(r"(?<!\\)&", body):
        multi = re.match(r"\s*\\multicolumn\{(\d+)\}", cell)
        spans += int(multi.group(1)) if multi else 1
    return spans


@pytest.mark.parametrize("name", NAMES)
def test_rendering_without_runs_is_deterministic_and_well_formed(name, plans):
    plan = plans[name]
    first, second = render_all(plan, collect_cells(plan)), render_all(plan, collect_cells(plan))
    assert first == second
    n_columns, rows = _tabular_rows(first["tex"])
    assert rows
    for line in rows:
        assert line.endswith(" \\\\"), line
        assert _cells(line) == n_columns, line
        unescaped = re.findall(r"(?<!\\)[_%#]", line)
        assert not unescaped, line
    md = first["md"].splitlines()
    table = [line for line in md if line.startswith("|")]
    assert len({line.count(" | ") for line in table if not line.startswith("|---")}) == 1
    manifest = plan.manifest
    assert len(table) == 2 + len(manifest.rows)
    frame = pd.read_csv(io.StringIO(first["csv"]))
    assert len(frame) == len(manifest.rows) * len(manifest.columns)
    for value in collect_cells(plan):  # no run anywhere: every cell says why it has no number
        assert value.mean is None
        if value.status == MISSING_DATA:
            ours = value.note
            assert ours == f"needs {ours.split()[1].rstrip(':')}: prepare {ours.split()[1].rstrip(':')}"


def test_ganseg_tab1_renders_the_paper_layout(plans):
    md = render_all(plans["ganseg_tab1"], collect_cells(plans["ganseg_tab1"]))["md"]
    assert "| Part | Ours | needs celeba_aligned: prepare celeba_aligned | 3.98 |  | needs celeba_wild: prepare " \
           "celeba_wild | **12.26** |  | needs celeba_wild: prepare celeba_wild | **6.18** |  |" in md
    assert "| Landmark | Thewlis et al. [52] |  | 7.95 |  |  | - |  |  | 31.30 |  |" in md
    tex = render_all(plans["melas_tab1_saliency"], collect_cells(plans["melas_tab1_saliency"]))["tex"]
    assert r"SD** (Zhang et al., 2018)" in tex and r"F$\beta$" in tex


def _manifest(**overrides):
    data = {"id": "t", "title": "T", "columns": [{"id": "c", "label": "C", "protocol": "synthetic_parts",
                                                  "metric": "fg_iou_per_image_mean"}],
            "rows": [{"id": "r", "label": "R", "method": "centre_prior"}]}
    data.update(overrides)
    return data


@pytest.mark.parametrize("change,words", [
    ({"rows": [{"id": "r", "label": "R"}]}, "give either method"),
    ({"rows": [{"id": "r", "label": "R", "method": "centre_prior", "cited": "x"}]}, "give either method"),
    ({"rows": [{"id": "r", "label": "R", "method": "m", "not_meaningful": {"zz": "x"}}]}, "unknown column 'zz'"),
    ({"columns": [{"id": "c", "label": "C", "metric": "m"}]}, "needs a protocol"),
    ({"seeds": [0, 0]}, "seeds must be"),
    ({"colour": "red"}, "unknown key 'colour'"),
    ({"rows": [{"id": "a b", "label": "R", "method": "m"}]}, "letters, digits"),
])
def test_manifest_mistakes_are_one_line_errors(change, words):
    with pytest.raises(UserError, match=re.escape(words)):
        parse_manifest(Path("bad.toml"), _manifest(**change))


def test_unknown_metric_is_refused_naming_the_column(tmp_path):
    bad = _manifest(columns=[{"id": "c", "label": "C", "protocol": "synthetic_parts", "metric": "fg_iou_nope"}])
    with pytest.raises(UserError, match="column 'c': protocol 'synthetic_parts'.*no metric 'fg_iou_nope'"):
        plan_table(parse_manifest(tmp_path / "bad.toml", bad), out=str(tmp_path))
