"""``tables`` never mixes runs and never dies on one bad file (issue 14, done-when 2): full and
``--limit`` runs are rows of their own, two runs of one seed are counted and flagged, a NaN run and
unreadable or schema-violating ``metrics.json`` files are left out with one warning line each naming
the file, the other runs are still tabulated (rc 0). Defaults resolve against the project and never
write the committed ``results/tables``. Run folders are fabricated as the runner writes them."""
import json
import math
from pathlib import Path

import pandas as pd
import pytest

from segbench.benchmark.records import RECORD_FIELDS, SCHEMA_VERSION
from segbench.benchmark.tables import read_runs, resolve_paths, run_tables
from tests.conftest import REPO, run_cli_here

METRICS = {"landmark_err_no_intercept_pct": False, "fg_iou_per_image_mean": True}
FULL_N_EVAL = 300


def fabricate_run(root: Path, seed: int, values: dict, *, limit=None, stamp: str, method="centre_prior",
                  preset="paper", batch_size=32, schema=SCHEMA_VERSION) -> Path:
    """A run folder as ``python -m benchmark run`` leaves it: metrics.json (one record per metric)
    and config.json (the resolved settings and the request)."""
    run_dir = root / "synthetic_parts" / method / f"{stamp}-s{seed}"
    (run_dir / "checkpoints" / "final").mkdir(parents=True)
    n_eval = FULL_N_EVAL if limit is None else min(limit, FULL_N_EVAL)
    records = []
    for metric, value in values.items():
        row = dict(method=method, protocol="synthetic_parts", protocol_version="1", dataset="synthetic_parts",
                   split="test", metric=metric, value=value, higher_is_better=METRICS[metric], seed=seed,
                   run_id=run_dir.name, n_eval=n_eval, num_parts=6, preset=preset, limit=limit,
                   batch_size=batch_size, git_hash="ccf6973be012", train_git_hash="ccf6973be012",
                   date="2026-01-02", schema_version=schema)
        if schema == "1":
            row = {k: v for k, v in row.items() if k not in ("limit", "batch_size", "train_git_hash")}
        else:
            assert tuple(row) == RECORD_FIELDS
        records.append(row)
    (run_dir / "metrics.json").write_text(json.dumps(records, indent=2) + "\n")  # NaN -> NaN, as json writes it
    request = dict(method=method, protocol="synthetic_parts", preset=preset, seed=seed, overrides={}, options={},
                   data_root=None, out=str(root), limit=limit, batch_size=batch_size, progress=False, device="auto",
                   num_threads=0)
    config = dict(method=method, preset=preset, method_config={"num_parts": 6}, protocol={"name": "synthetic_parts",
                  "version": "1"}, protocol_options={"regression": "no_intercept"},
                  dataset={"class": "SyntheticParts", "image_size": 64}, request=request,
                  fit_context={"device": "cpu", "seed": seed, "num_threads": 0}, argv=["-m", "benchmark", "run"])
    (run_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return run_dir


def _values(err, iou):
    return {"landmark_err_no_intercept_pct": err, "fg_iou_per_image_mean": iou}


def _warnings(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip()]


def done_when_2_folder(runs: Path) -> dict[str, Path]:
    """A full run, a --limit run of the same seed, two runs of one seed, a truncated metrics.json, a NaN record."""
    full = fabricate_run(runs, 0, _values(40.0, 0.50), stamp="20260102-100000-000000")
    limited = fabricate_run(runs, 0, _values(140.0, 0.12), limit=4, stamp="20260102-110000-000000")
    again = fabricate_run(runs, 0, _values(42.0, 0.52), stamp="20260102-120000-000000")
    truncated = fabricate_run(runs, 1, _values(41.0, 0.51), stamp="20260102-130000-000000")
    text = (truncated / "metrics.json").read_text()
    (truncated / "metrics.json").write_text(text[: len(text) // 2])
    nan = fabricate_run(runs, 2, _values(float("nan"), 0.55), stamp="20260102-140000-000000")
    return dict(full=full, limited=limited, again=again, truncated=truncated, nan=nan)


def test_done_when_2(tmp_path):
    runs, out = tmp_path / "runs", tmp_path / "tables"
    folders = done_when_2_folder(runs)
    res = run_cli_here("tables", "--runs", str(runs), "--out", str(out), "--show")
    print(res.stdout, res.stderr, sep="\n--- stderr ---\n")
    assert res.returncode == 0, res.stderr
    # the bad files: one warning line each, naming the file; no traceback
    lines = _warnings(res.stderr)
    assert len(lines) == 2 and "Traceback" not in res.stderr
    assert lines[0].startswith(f"warning: {folders['truncated'] / 'metrics.json'}: left out, unreadable")
    assert lines[1].startswith(f"warning: {folders['nan'] / 'metrics.json'}: left out, ")
    assert lines[1].endswith("left out, landmark_err_no_intercept_pct = nan, not a finite number")
    # the full and limited runs in separate rows; the duplicate seed counted and flagged
    ours = pd.read_csv(out / "ours.csv", index_col=0, keep_default_na=False)
    assert list(ours.index) == ["centre_prior [paper] K=6", "centre_prior [paper] K=6 limit=4"]
    assert ours.loc["centre_prior [paper] K=6", "synthetic_parts / fg_iou_per_image_mean ↑"] == \
        "0.5100 ± 0.0141 (n=2, seeds 0,0, duplicate seed)"
    assert ours.loc["centre_prior [paper] K=6 limit=4", "synthetic_parts / landmark_err_no_intercept_pct ↓"] == \
        "140.0000 (n=1)"
    assert (out / "ours.md").read_text() in res.stdout
    agg = pd.read_csv(out / "runs_aggregated.csv", keep_default_na=False)
    iou = agg[agg["metric"] == "fg_iou_per_image_mean"].astype({"limit": str}).set_index("limit")
    assert list(iou.index) == ["", "4"]
    assert iou.loc[""][["n_eval", "n_runs", "n_seeds", "seeds", "duplicate_seed"]].tolist() == \
        [FULL_N_EVAL, 2, 1, "0,0", True]
    assert math.isclose(iou.loc[""]["mean"], 0.51)
    limited = agg[agg["limit"].astype(str) == "4"]
    assert set(limited["n_eval"]) == {4} and set(limited["n_runs"]) == {1} and limited["std"].eq("").all()
    # the limited run is not compared with a paper number
    assert "limit" not in (out / "paper_vs_ours.csv").read_text().split("\n", 1)[1]
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_every_bad_file_is_one_warning_and_the_rest_is_tabulated(tmp_path):
    runs = tmp_path / "runs"
    good = fabricate_run(runs, 0, _values(40.0, 0.5), stamp="20260101-000000-000000")
    bad = {}
    for i, (name, content) in enumerate({
        "empty": b"", "blank": b"  \n", "random": bytes(range(256)) * 4, "truncated": b'[{"method": "centre_pr',
        "not_a_list": b'{"method": "x"}', "no_records": b"[]", "latin1": "[\"caf\xe9\"]".encode("latin-1"),
    }.items()):
        d = runs / "synthetic_parts" / "centre_prior" / f"2026010{i}-bad-{name}"
        d.mkdir(parents=True)
        (d / "metrics.json").write_bytes(content)
        bad[name] = d
    no_protocol = fabricate_run(runs, 3, _values(1.0, 0.1), stamp="20260103-000000-000000")
    rows = json.loads((no_protocol / "metrics.json").read_text())
    del rows[1]["protocol"]
    (no_protocol / "metrics.json").write_text(json.dumps(rows))
    future = fabricate_run(runs, 4, _values(1.0, 0.1), stamp="20260104-000000-000000", schema="9")
    inf = fabricate_run(runs, 5, _values(float("inf"), 0.1), stamp="20260105-000000-000000")
    string_value = fabricate_run(runs, 6, _values(1.0, 0.1), stamp="20260106-000000-000000")
    rows = json.loads((string_value / "metrics.json").read_text())
    rows[0]["value"] = "1.0"
    (string_value / "metrics.json").write_text(json.dumps(rows))
    bad.update(no_protocol=no_protocol, future=future, inf=inf, string_value=string_value)

    res = run_cli_here("tables", "--runs", str(runs), "--out", str(tmp_path / "t"))
    assert res.returncode == 0 and "Traceback" not in res.stderr
    lines = _warnings(res.stderr)
    assert len(lines) == len(bad)
    for d in bad.values():
        assert sum(str(d / "metrics.json") in line for line in lines) == 1, d
    assert all(line.startswith("warning: ") and ": left out, " in line for line in lines)
    assert any("lacks ['protocol']" in line for line in lines)
    assert any("schema_version '9'" in line for line in lines)
    agg = pd.read_csv(tmp_path / "t" / "runs_aggregated.csv")
    assert set(agg["n_runs"]) == {1} and len(agg) == 2 and set(agg["seeds"].astype(str)) == {"0"}
    assert str(good.name).endswith("-s0")


def test_schema_1_records_are_read_and_said_nothing_wrong_about(tmp_path):
    runs = tmp_path / "runs"
    fabricate_run(runs, 0, _values(40.0, 0.50), stamp="20250101-000000-000000", schema="1")
    fabricate_run(runs, 1, _values(41.0, 0.54), stamp="20250101-000001-000000", schema="1")
    fabricate_run(runs, 0, _values(30.0, 0.60), stamp="20260101-000000-000000")
    res = run_cli_here("tables", "--runs", str(runs), "--out", str(tmp_path / "t"))
    assert res.returncode == 0 and res.stderr == ""
    agg = pd.read_csv(tmp_path / "t" / "runs_aggregated.csv", keep_default_na=False)
    old = agg[agg["schema_version"] == 1]
    assert set(old["n_runs"]) == {2} and set(old["limit"]) == {""} and set(old["batch_size"]) == {""}
    assert set(old["duplicate_seed"]) == {False}
    new = agg[agg["schema_version"] == 2]
    assert set(new["n_runs"]) == {1} and set(new["batch_size"].astype(str)) == {"32"}  # not averaged with the schema-1 runs
    ours = pd.read_csv(tmp_path / "t" / "ours.csv", index_col=0)
    assert list(ours.index) == ["centre_prior [paper] K=6", "centre_prior [paper] K=6 (schema 1)"]
    (record,) = [r for run in read_runs(runs) if run.records[0]["schema_version"] == "1"
                 for r in run.records if r["metric"] == "fg_iou_per_image_mean" and r["seed"] == 0]
    assert (record["limit"], record["batch_size"], record["train_git_hash"]) == (None, None, "ccf6973be012")


def test_batch_size_alone_does_not_split_a_row(tmp_path):
    runs = tmp_path / "runs"
    fabricate_run(runs, 0, _values(40.0, 0.50), stamp="20260101-000000-000000", batch_size=8)
    fabricate_run(runs, 1, _values(42.0, 0.52), stamp="20260101-000001-000000", batch_size=32)
    run_tables(runs, REPO / "results" / "paper", tmp_path / "t")
    agg = pd.read_csv(tmp_path / "t" / "runs_aggregated.csv")
    assert set(agg["n_runs"]) == {2} and set(agg["batch_size"]) == {"8,32"}


# ---------------------------------------------------------------- paths and arguments


def test_missing_runs_folder_is_one_line_exit_2_and_writes_nothing(tmp_path):
    out = tmp_path / "t"
    res = run_cli_here("tables", "--runs", str(tmp_path / "nope"), "--out", str(out))
    assert res.returncode == 2 and res.stdout == ""
    assert res.stderr == f"error: --runs {tmp_path / 'nope'}: no such folder\n"
    assert not out.exists()
    (tmp_path / "afile").write_text("x")
    res = run_cli_here("tables", "--runs", str(tmp_path / "afile"), "--out", str(out))
    assert res.returncode == 2 and res.stderr == f"error: --runs {tmp_path / 'afile'}: not a folder\n"


def test_out_that_is_a_file_is_one_line_exit_2(tmp_path):
    (tmp_path / "runs").mkdir()
    (tmp_path / "t").write_text("x")
    res = run_cli_here("tables", "--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "t"))
    assert res.returncode == 2 and res.stderr == f"error: --out {tmp_path / 't'}: not a folder\n"


def test_defaults_resolve_against_the_project_not_the_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    runs, paper, out = resolve_paths(runs="runs")
    assert runs == Path("runs")  # a path given is the user's, relative to the cwd
    assert paper == REPO / "results" / "paper" and paper.is_dir()
    assert out == REPO / "runs" / "tables"  # never the committed results/tables
    # a project without runs/ and results/paper/: a missing runs folder is an error, no paper a warning
    root = tmp_path / "project"
    with pytest.raises(Exception, match="no such folder"):
        resolve_paths(root=root)
    (root / "runs").mkdir(parents=True)
    warned = []
    assert resolve_paths(root=root, warn=warned.append) == (root / "runs", root / "results" / "paper",
                                                           root / "runs" / "tables")
    assert len(warned) == 1 and "give --paper DIR" in warned[0]
    with pytest.raises(Exception, match="--paper .*no such folder"):
        resolve_paths(runs=root / "runs", paper=tmp_path / "typo")


def test_tables_from_another_folder_keeps_the_papers_numbers(tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    fabricate_run(runs, 0, _values(40.0, 0.50), stamp="20260101-000000-000000")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert run_tables(runs=runs, out=tmp_path / "t") == 0
    paper = pd.read_csv(tmp_path / "t" / "paper_vs_ours.csv")
    assert "GANSeg Tab.1" in set(paper["citation"])
    assert not (elsewhere / "runs").exists() and not (elsewhere / "results").exists()


def _tables_defaults():
    from segbench.benchmark.cli import build_parser

    args = build_parser().parse_args(["tables"])
    return args.runs, args.paper, args.out


@pytest.mark.skipif(_tables_defaults() != (None, None, None),
                    reason="cli.py's tables flags still default to cwd-relative paths (needs the cli.py edit)")
def test_cli_defaults_are_the_projects(tmp_path):
    runs = tmp_path / "runs"
    fabricate_run(runs, 0, _values(40.0, 0.50), stamp="20260101-000000-000000")
    res = run_cli_here("tables", "--runs", str(runs), "--out", str(tmp_path / "t"), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "GANSeg Tab.1" in (tmp_path / "t" / "paper_vs_ours.csv").read_text()


def test_make_tables_is_the_one_way_to_write_results_tables():
    makefile = (REPO / "Makefile").read_text()
    recipe = makefile.split("\ntables:", 1)[1].split("\n\n", 1)[0]
    assert "benchmark tables --out results/tables" in recipe


def test_ci_resamples_checked_before_anything(tmp_path):
    with pytest.raises(Exception, match="--ci-resamples must be at least 1"):
        run_tables(tmp_path / "nope", out=tmp_path / "t", ci=True, ci_resamples=0)
    assert not (tmp_path / "t").exists()
