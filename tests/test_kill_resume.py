"""`kill -9` in the middle of any training stage, then `run --resume`: the result is
bit-identical to a run that never stopped (CPU, one thread). The kill is a real SIGKILL of
the run's process, sent by the loop core's test hook right after the chosen step."""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO, run_cli_here

COMMON = ("--protocol", "synthetic_parts", "--preset", "smoke", "--limit", "8", "--no-progress",
          "--device", "cpu", "--threads", "1")
METHODS = {
    "ganseg": ("--set", "steps=6", "--set", "checkpoint_every=2", "--set", "segmenter.steps=5",
               "--set", "segmenter.checkpoint_every=2"),
    "latent_direction": ("--set", "generator.train_steps=5", "--set", "generator.checkpoint_every=2",
                         "--set", "direction.steps=5", "--set", "direction.checkpoint_every=2"),
}
# Where to kill: a step right after a snapshot, and one between snapshots (work is redone).
KILLS = {"ganseg": ("gan@4", "segmenter@3"), "latent_direction": ("dcgan@3", "direction_dark@4")}


def _killed(args, kill, env_extra=()):
    env = {**os.environ, "PYTHONPATH": str(REPO), "SEGBENCH_INJECT_KILL": kill}
    proc = subprocess.run([sys.executable, "-m", "benchmark", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, (kill, proc.returncode, proc.stderr[-1500:])


def _final(run_dir: Path) -> tuple[dict, dict]:
    state = torch.load(run_dir / "checkpoints" / "final" / "state.pt", weights_only=True)
    metrics = {r["metric"]: r["value"] for r in json.loads((run_dir / "metrics.json").read_text())}
    return state, metrics


@pytest.mark.parametrize("method", sorted(METHODS))
def test_kill_9_then_resume_is_bit_identical(method, tmp_path):
    args = ("run", "--method", method, *COMMON, *METHODS[method])
    straight = run_cli_here(*args, "--out", str(tmp_path / "straight"))
    assert straight.returncode == 0, straight.stderr
    (straight_dir,) = (tmp_path / "straight").glob(f"synthetic_parts/{method}/*")

    first, second = KILLS[method]
    _killed((*args, "--out", str(tmp_path / "killed")), first)
    (run_dir,) = (tmp_path / "killed").glob(f"synthetic_parts/{method}/*")
    assert not (run_dir / "metrics.json").exists()
    _killed(("run", "--resume", str(run_dir), "--no-progress"), second)
    resumed = run_cli_here("run", "--resume", str(run_dir), "--no-progress")
    assert resumed.returncode == 0, resumed.stderr

    state_a, metrics_a = _final(straight_dir)
    state_b, metrics_b = _final(run_dir)
    assert state_a.keys() == state_b.keys()
    different = [k for k in state_a if not torch.equal(state_a[k], state_b[k])]
    assert not different, different[:5]
    assert metrics_a == metrics_b
