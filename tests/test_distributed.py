"""Data-parallel training under torchrun (gloo, CPU): the command, equivalence with one process,
and kill/resume.

Equivalence (tests/helpers/ddp_gan_worker.py: 6 GAN steps of the smoke preset at global batch 8,
gradient penalty and regularisers on every 2nd step; one process with batch 8 vs two ranks with 4
each, the same samples):

- Without BatchNorm in the loop (generator.batchnorm=false) every weight of both networks agrees
  to 5e-6 (measured: 2.4e-7 generator, 7.5e-7 discriminator). Not bit-identical: the gradient of
  the batch of 8 is one reduction in one process and the mean of two reductions of 4 over two
  ranks, so float sums are added in another order.
- With synchronised BatchNorm (the code's SynchronizedBatchNorm2d) the discriminator agrees to
  1e-5 (measured 1.9e-6) and every generator tensor to 2 * steps * lr_g = 1.2e-3 (measured
  5.8e-4). The looser bound is Adam's: the biases of convolutions that feed a BatchNorm have a
  gradient that is zero up to rounding (the normalisation removes them), Adam divides that
  rounding noise by its own size, and each step moves such a bias by up to ~lr_g whichever way the
  noise points: the two runs walk those biases (and the running means they shift) differently.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO, run_cli_here

WORKER = REPO / "tests" / "helpers" / "ddp_gan_worker.py"
SNAPSHOT = Path("checkpoints") / "training" / "gan" / "gan.pt"
STEPS, LR_G = 6, 1e-4
RUN = ("run", "--method", "ganseg", "--protocol", "synthetic_parts", "--preset", "smoke", "--set", "batch_size=8",
       "--limit", "16", "--no-progress", "--device", "cpu")


def _env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                                               "MASTER_PORT", "SEGBENCH_INJECT_KILL")}
    return {**env, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", **extra}


def torchrun(*args: str, nproc: int = 2, **env: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--standalone", *args]
    return subprocess.run(cmd, cwd=REPO, env=_env(**env), capture_output=True, text=True, timeout=300)


def _networks(folder: Path) -> dict[str, dict[str, torch.Tensor]]:
    return torch.load(folder / SNAPSHOT, weights_only=True)["modules"]


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


def test_two_ranks_match_one_process_within_stated_bounds(tmp_path):
    one = subprocess.run([sys.executable, str(WORKER), str(tmp_path / "one")], cwd=REPO, env=_env(),
                         capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-2000:]
    two = torchrun(str(WORKER), str(tmp_path / "two"))
    assert two.returncode == 0, two.stderr[-3000:]

    plain_a, plain_b = _networks(tmp_path / "one" / "no_batchnorm"), _networks(tmp_path / "two" / "no_batchnorm")
    assert not any("norm" in k for k in plain_a["generator"])  # really no BatchNorm in the loop
    assert _max_diff(plain_a["generator"], plain_b["generator"]) < 5e-6
    assert _max_diff(plain_a["discriminator"], plain_b["discriminator"]) < 5e-6

    sync_a, sync_b = _networks(tmp_path / "one" / "sync_batchnorm"), _networks(tmp_path / "two" / "sync_batchnorm")
    assert any("norm.running_mean" in k for k in sync_a["generator"])
    assert _max_diff(sync_a["discriminator"], sync_b["discriminator"]) < 1e-5
    assert _max_diff(sync_a["generator"], sync_b["generator"]) < 2 * STEPS * LR_G
    for folder in ("one", "two"):  # both compared at the end of training
        assert torch.load(tmp_path / folder / "sync_batchnorm" / SNAPSHOT, weights_only=True)["step"] == STEPS


def _final(run_dir: Path) -> tuple[dict, dict]:
    state = torch.load(run_dir / "checkpoints" / "final" / "state.pt", weights_only=True)
    metrics = {r["metric"]: r["value"] for r in json.loads((run_dir / "metrics.json").read_text())}
    return state, metrics


def test_torchrun_run_then_kill_and_resume(tmp_path):
    # The command: one run folder, written by rank 0, recording the world size.
    straight = torchrun("-m", "benchmark", *RUN, "--out", str(tmp_path / "straight"))
    assert straight.returncode == 0, straight.stderr[-3000:]
    (straight_dir,) = (tmp_path / "straight").glob("synthetic_parts/ganseg/*")
    config = json.loads((straight_dir / "config.json").read_text())
    assert config["fit_context"]["world_size"] == 2 and config["fit_context"]["backend"] == "gloo"
    rows = [json.loads(line) for line in (straight_dir / "stats.jsonl").read_text().splitlines()]
    gan_rows = [r for r in rows if r.get("phase") == "gan"]
    assert gan_rows and all(r["world_size"] == 2 and r["images_s"] > 0 and r["peak_rss_mb"] > 0 for r in gan_rows)
    assert "run directory:" in straight.stdout and straight.stdout.count("run directory:") == 1
    # A command that never reaches fit (a dry-run resume) releases every rank: no hang, rc 0.
    dry = torchrun("-m", "benchmark", "run", "--resume", str(straight_dir), "--dry-run")
    assert dry.returncode == 0, dry.stderr[-3000:]

    # SIGKILL every rank right after GAN step 2 (a snapshot step), then resume under torchrun.
    killed = torchrun("-m", "benchmark", *RUN, "--out", str(tmp_path / "killed"), SEGBENCH_INJECT_KILL="gan@2")
    assert killed.returncode != 0
    (run_dir,) = (tmp_path / "killed").glob("synthetic_parts/ganseg/*")
    assert not (run_dir / "metrics.json").exists()
    assert torch.load(run_dir / SNAPSHOT, weights_only=True)["step"] == 2
    other_world = tmp_path / "other_world"
    shutil.copytree(run_dir, other_world)

    resumed = torchrun("-m", "benchmark", "run", "--resume", str(run_dir), "--no-progress")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    state_a, metrics_a = _final(straight_dir)
    state_b, metrics_b = _final(run_dir)
    different = [k for k in state_a if not torch.equal(state_a[k], state_b[k])]
    assert not different, different[:5]  # the same world size: bit-identical
    assert metrics_a == metrics_b

    # The same snapshot continued by one process: it completes (not bit-identical: see above).
    single = run_cli_here("run", "--resume", str(other_world), "--no-progress")
    assert single.returncode == 0, single.stderr
    _, metrics_c = _final(other_world)
    assert metrics_c.keys() == metrics_a.keys()


def test_batch_that_does_not_split_over_the_ranks_is_one_line(tmp_path):
    proc = torchrun("-m", "benchmark", *RUN, "--set", "batch_size=5", "--out", str(tmp_path / "runs"))
    assert proc.returncode != 0
    assert "batch_size=5 does not split over 2 processes" in proc.stderr
    assert not list((tmp_path / "runs").glob("synthetic_parts/ganseg/*"))  # nothing kept: no progress


def test_declared_data_parallel_batches_are_int_fields():
    from segbench.benchmark.config import to_jsonable
    from segbench.benchmark.runner import RunRequest, _leaf, resolve_method_config
    from segbench.methods import METHODS

    for name in METHODS.names():
        cls, config = resolve_method_config(RunRequest(method=name, protocol="synthetic_parts", preset="smoke"))
        for key in getattr(cls, "DATA_PARALLEL_BATCHES", ()):
            assert isinstance(_leaf(to_jsonable(config), key), int), (name, key)
