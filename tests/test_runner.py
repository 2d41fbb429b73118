"""End to end through the CLI: run -> run directory -> eval -> tables."""
import json

import pytest

from segbench.benchmark.records import RECORD_FIELDS
from tests.conftest import run_cli_here

RUN_FILES = ["config.json", "env.json", "stats.jsonl", "metrics.json", "log.txt",
             "checkpoints/final/method_config.json", "checkpoints/final/state.pt"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    dirs = {}
    for method, seed in [("centre_prior", 0), ("centre_prior", 1), ("dummy", 0)]:
        res = run_cli_here("run", "--method", method, "--protocol", "synthetic_parts", "--seed", str(seed),
                      "--preset", "smoke", "--limit", "48", "--out", str(out), "--no-progress", "--device", "cpu")
        assert res.returncode == 0, res.stderr
        line = next(l for l in res.stdout.splitlines() if l.startswith("run directory:"))
        dirs[(method, seed)] = line.split(":", 1)[1].strip()
    return out, dirs


def test_run_writes_every_record_file(runs):
    from pathlib import Path
    _, dirs = runs
    run_dir = Path(dirs[("centre_prior", 0)])
    for name in RUN_FILES + ["figures/test_overlays.png"]:
        assert (run_dir / name).is_file(), name
    assert (Path(dirs[("dummy", 0)]) / "figures/samples.png").is_file()
    records = json.loads((run_dir / "metrics.json").read_text())
    assert records and all(tuple(r) == RECORD_FIELDS for r in records)
    assert {r["n_eval"] for r in records} == {48}
    config = json.loads((run_dir / "config.json").read_text())
    assert config["method_config"]["num_parts"] == 6 and config["protocol"]["name"] == "synthetic_parts"
    history = json.loads((run_dir / "env.json").read_text())  # a list: start, then one entry per resume
    assert isinstance(history, list) and [e["event"] for e in history] == ["start"]
    env = history[0]
    assert {"git", "python", "torch", "torchvision", "cpu", "date"} <= set(env)
    assert config["fit_context"]["device"] == "cpu" and config["request"]["device"] == "cpu"
    assert env["device"]["device"] == "cpu"
    assert config["train_git_hash"] == config["git_hash"] == records[0]["git_hash"] == records[0]["train_git_hash"]
    assert {r["limit"] for r in records} == {48} and {r["batch_size"] for r in records} == {32}
    stats = [json.loads(l) for l in (run_dir / "stats.jsonl").read_text().splitlines()]
    assert [s["phase"] for s in stats] == ["fit_done", "eval_done"]


def test_eval_rescores_identically(runs):
    from pathlib import Path
    _, dirs = runs
    for key in [("centre_prior", 0), ("dummy", 0)]:
        run_dir = Path(dirs[key])
        res = run_cli_here("eval", str(run_dir), "--no-progress")
        assert res.returncode == 0, res.stderr
        original = json.loads((run_dir / "metrics.json").read_text())
        rescored = json.loads((run_dir / "metrics_rescored.json").read_text())
        assert original == rescored


def test_centre_prior_is_seed_independent(runs):
    from pathlib import Path
    _, dirs = runs
    values = [{r["metric"]: r["value"] for r in json.loads((Path(dirs[("centre_prior", s)]) / "metrics.json").read_text())}
              for s in (0, 1)]
    assert values[0] == values[1]


def test_tables_from_runs_are_deterministic(runs, tmp_path):
    out, _ = runs
    for target in ("t1", "t2"):
        res = run_cli_here("tables", "--runs", str(out), "--out", str(tmp_path / target))
        assert res.returncode == 0, res.stderr
    names = sorted(p.name for p in (tmp_path / "t1").iterdir())
    assert "ours.md" in names and "paper_vs_ours.csv" in names
    for name in names:
        assert (tmp_path / "t1" / name).read_bytes() == (tmp_path / "t2" / name).read_bytes()
    table = (tmp_path / "t1" / "ours.md").read_text()
    assert "centre_prior [smoke] K=6" in table and "(n=2)" in table


def test_a_device_that_is_not_there_is_one_line(tmp_path):
    import torch
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    res = run_cli_here("run", "--method", "centre_prior", "--protocol", "synthetic_parts", "--preset", "smoke",
                  "--limit", "4", "--out", str(tmp_path), "--no-progress", "--device", "cuda:0")
    assert res.returncode == 2 and res.stderr.strip() == "error: --device cuda:0: no CUDA device is available here"
    res = run_cli_here("run", "--method", "centre_prior", "--protocol", "synthetic_parts", "--preset", "smoke",
                  "--limit", "4", "--out", str(tmp_path), "--no-progress", "--device", "tpu")
    assert res.returncode == 2 and "--device tpu: expected auto, cpu, cuda or cuda:N" in res.stderr


def test_a_fixed_num_parts_method_refuses_another_k(tmp_path):
    res = run_cli_here("run", "--method", "latent_direction", "--protocol", "synthetic_parts", "--preset", "smoke",
                  "--set", "num_parts=3", "--dry-run")
    assert res.returncode == 2 and "always has num_parts=1" in res.stderr


def test_eval_option_scores_another_variant_that_tables_reads(tmp_path):
    """A protocol variant is scored from the checkpoint (no retraining) into its own file, and
    tables shows it beside the run's own metrics without counting anything twice."""
    out = tmp_path / "runs"
    res = run_cli_here("run", "--method", "centre_prior", "--protocol", "synthetic_parts", "--preset", "smoke",
                       "--limit", "24", "--out", str(out), "--no-progress")
    assert res.returncode == 0, res.stderr
    (run_dir,) = out.glob("synthetic_parts/centre_prior/*")
    res = run_cli_here("eval", str(run_dir), "--option", "regression=liu", "--no-progress")
    assert res.returncode == 0, res.stderr
    variant = json.loads((run_dir / "metrics_variant-regression-liu.json").read_text())
    assert "landmark_err_liu_pct" in {r["metric"] for r in variant}
    assert (run_dir / "scores_per_image_variant-regression-liu.csv.gz").is_file()
    res = run_cli_here("tables", "--runs", str(out), "--out", str(tmp_path / "t"))
    assert res.returncode == 0, res.stderr
    table = (tmp_path / "t" / "ours.md").read_text()
    assert "landmark_err_liu_pct" in table and "landmark_err_no_intercept_pct" in table
    assert table.count("(n=2") == 0  # the shared metrics (fg IoU, mIoU) are not counted twice
