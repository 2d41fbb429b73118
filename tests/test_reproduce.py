"""`reproduce TABLE` end to end (issue 18): the dry run, a small table run with --jobs 2 and
rerun (all reused), a failing cell, an interrupted cell continued with `run --resume`, and the
submitit path of `--executor slurm` (submitit's local executor). Runs use the smoke preset on
synthetic_parts with 8 images per split (tests/fixtures/reproduce/*.toml)."""
import csv
import io
import json
import time
from pathlib import Path

import pytest
import torch

from segbench.benchmark.reproduce import plan_table
from segbench.benchmark.reproduce_exec import thread_budget
from segbench.benchmark.table_manifest import load_manifest
from segbench.benchmark.table_render import collect_cells, render_all
from segbench.benchmark.tables import aggregate, load_runs
from tests.conftest import run_cli_here

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "reproduce"
TINY, FAILING, RESUME, ONE_CELL = (str(FIXTURES / f"{name}.toml") for name in ("tiny", "failing", "resume",
                                                                                 "one_cell"))


def reproduce(table: str, out: Path, *args: str):
    return run_cli_here("reproduce", table, "--out", str(out), "--tables-out", str(out / "tables"), *args)


def run_folders(out: Path) -> list[Path]:
    return sorted(p.parent for p in out.glob("*/*/*/config.json"))


# ---------------------------------------------------------------- dry run


def test_dry_run_lists_every_cell_with_its_command_and_status(tmp_path):
    empty = tmp_path / "no_data"
    empty.mkdir()
    out = tmp_path / "runs"
    result = run_cli_here("reproduce", "ganseg_tab1", "--dry-run", "--out", str(out), "--data-root", str(empty))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    cells = [line for line in lines if line.startswith("  ") and line.rstrip().endswith("]")
             and not line.startswith("  -")]
    # GANSeg at aligned K=10, wild K=4 and K=8, liu_parts at wild K=4 and K=8; 3 seeds each
    assert len(cells) == 15, result.stdout
    assert all("[missing data: needs celeba_" in line for line in cells), cells
    _, threads = thread_budget(1)
    command = (f"python -m segbench run --method ganseg --protocol celeba_wild --preset paper --seed 1 --set "
               f"num_parts=4 --out {out} --threads {threads} --no-progress --data-root {empty}")
    assert f"      {command}" in lines
    assert "  - Thewlis et al. [52]: not implemented: cited only" in lines
    assert any(line.startswith("  - Liu et al. [32] x Aligned K=10: not meaningful:") for line in lines)
    assert lines[-2] == "15 run cells: 15 missing data"
    assert not out.exists()  # a dry run writes nothing


def test_dry_run_slurm_prints_the_sbatch_parameters(tmp_path):
    result = run_cli_here("reproduce", ONE_CELL, "--dry-run", "--executor", "slurm", "--out", str(tmp_path),
                          "--slurm-partition", "gpu", "--slurm-gpus-per-task", "2", "--slurm-cpus-per-task", "6",
                          "--slurm-time", "90")
    assert result.returncode == 0, result.stderr
    for line in ("#SBATCH --partition=gpu", "#SBATCH --gpus-per-task=2", "#SBATCH --cpus-per-task=6",
                 "#SBATCH --time=90", "#SBATCH --ntasks-per-node=1"):
        assert f"  {line}" in result.stdout.splitlines(), result.stdout
    assert "--threads 6" in result.stdout  # the run uses the CPUs it asks for


def test_bad_flags_are_one_line_user_errors(tmp_path):
    for args, words in ((("no_such_table",), "unknown table"), ((ONE_CELL, "--jobs", "0"), "--jobs 0"),
                        ((ONE_CELL, "--preset", "fast"), "--preset fast")):
        result = run_cli_here("reproduce", *args, "--dry-run", "--out", str(tmp_path))
        assert result.returncode == 2 and result.stderr.startswith("error: ") and words in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


# ---------------------------------------------------------------- a small table, run and rerun


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The fixture table run once with --jobs 2 (3 cells), then again (everything reused)."""
    out = tmp_path_factory.mktemp("tiny") / "runs"
    first = reproduce(TINY, out, "--jobs", "2")
    rendered_first = {s: (out / "tables" / f"tiny.{s}").read_bytes() for s in ("md", "csv", "tex")}
    folders_first = run_folders(out)
    t0 = time.perf_counter()
    second = reproduce(TINY, out, "--jobs", "2")
    return dict(out=out, first=first, second=second, second_s=time.perf_counter() - t0,
                rendered_first=rendered_first, folders_first=folders_first)


def test_small_table_runs_to_completion_with_two_jobs(tiny):
    first = tiny["first"]
    assert first.returncode == 0, first.stderr
    assert "local: 2 worker(s)" in first.stdout
    assert "table tiny: 3 run cells: 3 done" in first.stdout.splitlines()
    assert len(tiny["folders_first"]) == 3  # centre_prior seeds 0 and 1, ganseg seed 0 (row seeds)
    state = json.loads((tiny["out"] / ".reproduce" / "tiny" / "state.json").read_text())
    assert {c["status"] for c in state["cells"].values()} == {"done"}


def test_rerun_reuses_every_cell_and_is_quick(tiny):
    second = tiny["second"]
    assert second.returncode == 0, second.stderr
    assert "3 run cells: 3 done" in second.stdout and "started" not in second.stdout
    assert run_folders(tiny["out"]) == tiny["folders_first"]
    assert tiny["second_s"] < 20, tiny["second_s"]


def test_rendered_values_equal_the_tables_command(tiny, tmp_path):
    out = tiny["out"]
    rows = list(csv.DictReader(io.StringIO((out / "tables" / "tiny.csv").read_text())))
    ours = {(r["method"], r["metric"]): r for r in rows if r["status"] == "ok"}
    assert set(ours) == {("centre_prior", "landmark_err_no_intercept_pct"),
                         ("centre_prior", "fg_iou_per_image_mean"), ("ganseg", "landmark_err_no_intercept_pct")}
    # the tables command over the same runs: same numbers, same formatting
    result = run_cli_here("tables", "--runs", str(out), "--out", str(tmp_path / "t"))
    assert result.returncode == 0, result.stderr
    aggregated = list(csv.DictReader(io.StringIO((tmp_path / "t" / "runs_aggregated.csv").read_text())))
    theirs = {(r["method"], r["metric"]): r for r in aggregated}
    for key, row in ours.items():
        assert (row["ours_mean"], row["ours_std"], row["ours_n"], row["ours_seeds"]) == \
            (theirs[key]["mean"], theirs[key]["std"], theirs[key]["n_runs"], theirs[key]["seeds"]), key
    # and unrounded, in process
    agg = aggregate(load_runs(out))
    plan = plan_table(load_manifest(TINY), out=str(out))
    for value in collect_cells(plan):
        if value.mean is None:
            continue
        match = agg[(agg["method"] == value.row.method) & (agg["metric"] == value.column.metric)]
        assert len(match) == 1 and match["mean"].iloc[0] == value.mean and int(match["n_runs"].iloc[0]) == value.n
    paper = {(r["row_id"], r["column_id"]): r for r in rows}
    centre = paper[("centre", "landmarks")]
    assert float(centre["delta"]) == pytest.approx(float(centre["ours_mean"]) - 130.25, abs=1e-3)
    assert paper[("cited_row", "landmarks")]["status"] == "cited" and paper[("cited_row", "landmarks")]["ours_mean"] == ""
    assert paper[("ganseg", "fg_iou")]["status"] == "not meaningful"


def test_rendering_is_byte_identical(tiny):
    out = tiny["out"]
    second = {s: (out / "tables" / f"tiny.{s}").read_bytes() for s in ("md", "csv", "tex")}
    assert second == tiny["rendered_first"]
    plan = plan_table(load_manifest(TINY), out=str(out))
    assert render_all(plan, collect_cells(plan)) == render_all(plan, collect_cells(plan))
    assert {s: t.encode() for s, t in render_all(plan, collect_cells(plan)).items()} == second


def test_status_lists_cells_and_their_run_folders(tiny):
    result = run_cli_here("reproduce", TINY, "--status", "--out", str(tiny["out"]))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("table tiny: 3/3 done, 0 running, 0 failed")
    for folder in tiny["folders_first"]:
        assert str(folder) in result.stdout


# ---------------------------------------------------------------- failures, resume, submitit


def test_a_failing_cell_is_reported_and_the_others_complete(tmp_path):
    out = tmp_path / "runs"
    result = reproduce(FAILING, out, "--jobs", "2")
    assert result.returncode == 1, result.stderr
    log = out / ".reproduce" / "failing" / "logs" / "broken.synthetic_parts.k6.s0.log"
    assert result.stderr.splitlines()[0] == "error: 1 of 2 cells failed:"
    assert f"  broken.synthetic_parts.k6.s0: steps=-1: must be an integer >= 0 (log {log})" in result.stderr
    assert "error: steps=-1" in log.read_text()
    (done,) = run_folders(out)  # the other cell ran to the end
    assert (done / "metrics.json").is_file() and done.parent.name == "centre_prior"
    table = (out / "tables" / "failing.md").read_text()
    assert "| GANSeg with steps=-1 | failed |" in table and "| Centre prior | **" in table
    status = run_cli_here("reproduce", FAILING, "--status", "--out", str(out))
    assert "[failed] steps=-1: must be an integer >= 0" in status.stdout


def _final(run_dir: Path) -> tuple[dict, dict]:
    state = torch.load(run_dir / "checkpoints" / "final" / "state.pt", weights_only=True)
    metrics = {r["metric"]: r["value"] for r in json.loads((run_dir / "metrics.json").read_text())}
    return state, metrics


def test_an_interrupted_cell_is_resumed_bit_identically(tmp_path, monkeypatch):
    killed_out, straight_out = tmp_path / "killed", tmp_path / "straight"
    monkeypatch.setenv("SEGBENCH_INJECT_KILL", "gan@2")  # SIGKILL right after GAN step 2 (a snapshot)
    first = reproduce(RESUME, killed_out, "--jobs", "2")  # one thread per run on 2 cores: tiny nets run faster
    assert first.returncode == 1 and "killed by SIGKILL" in first.stderr, first.stderr
    (run_dir,) = run_folders(killed_out)
    assert (run_dir / "checkpoints" / "training" / "gan" / "gan.pt").is_file()
    assert not (run_dir / "metrics.json").exists()
    monkeypatch.delenv("SEGBENCH_INJECT_KILL")

    dry = run_cli_here("reproduce", RESUME, "--dry-run", "--out", str(killed_out))
    assert f"[interrupted, resume: {run_dir}]" in dry.stdout and f"run --resume {run_dir} " in dry.stdout
    resumed = reproduce(RESUME, killed_out, "--jobs", "2")
    assert resumed.returncode == 0, resumed.stderr
    assert run_folders(killed_out) == [run_dir] and (run_dir / "metrics.json").is_file()
    assert f"run --resume {run_dir}" in (killed_out / ".reproduce" / "resume" / "logs" /
                                         "ganseg.synthetic_parts.k6.s0.log").read_text()

    straight = reproduce(RESUME, straight_out, "--jobs", "2")  # the same cell, never interrupted
    assert straight.returncode == 0, straight.stderr
    (straight_dir,) = run_folders(straight_out)
    state_a, metrics_a = _final(straight_dir)
    state_b, metrics_b = _final(run_dir)
    assert state_a.keys() == state_b.keys()
    assert not [k for k in state_a if not torch.equal(state_a[k], state_b[k])]
    assert metrics_a == metrics_b


def test_slurm_executor_through_submitit_local(tmp_path):
    pytest.importorskip("submitit", reason="submitit (the slurm extra) is not installed")
    out = tmp_path / "runs"
    result = reproduce(ONE_CELL, out, "--executor", "slurm", "--submitit-cluster", "local",
                       "--slurm-gpus-per-task", "0", "--slurm-cpus-per-task", "1", "--slurm-time", "5")
    assert result.returncode == 0, result.stderr
    (folder,) = run_folders(out)
    assert (folder / "metrics.json").is_file()
    assert f"done centre.synthetic_parts.k6.s0: {folder}" in result.stdout
    assert list((out / ".reproduce" / "one_cell" / "submitit").glob("*_result.pkl"))
    assert "| Centre prior | **" in (out / "tables" / "one_cell.md").read_text()
