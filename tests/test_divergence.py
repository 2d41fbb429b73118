"""Real divergences, end to end: a learning rate far too large stops the run with one line and exit
code 2, no traceback, and every training snapshot left on disk holds only finite tensors (weights,
BatchNorm buffers, optimiser state). No test hook: the losses or the BatchNorm statistics really
blow up at these settings (measured at preset smoke on synthetic_parts, one thread):

    ganseg segmenter.lr=1e9           the segmenter's BatchNorm running_var becomes inf at step 2-3
                                      (the loss stays finite): the snapshot save refuses it
    latent_direction segmenter.lr=1e9 the same in its UNet
    latent_direction generator.train_lr=1e9   the DCGAN discriminator's BatchNorm buffers, step 1-3
    ganseg lr_g=1e9                   loss_d / loss_g_gan NaN at step 2 (before the first snapshot
                                      with checkpoint_every=2; after the step-1 one with 1)
    ganseg lr_g=60 (steps 20)         generator BatchNorm buffers inf at step ~4, after the step-2
                                      snapshot: the divergence falls between snapshots
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.conftest import run_cli_here

pytestmark = pytest.mark.usefixtures("one_thread")


def _non_finite(obj, key=""):
    """Dotted keys of the floating-point tensors in a (nested) snapshot that are not all finite."""
    if isinstance(obj, torch.Tensor):
        return [key] if obj.is_floating_point() and not torch.isfinite(obj).all() else []
    if isinstance(obj, dict):
        return [k for name, v in obj.items() for k in _non_finite(v, f"{key}.{name}")]
    if isinstance(obj, (list, tuple)):
        return [k for i, v in enumerate(obj) for k in _non_finite(v, f"{key}[{i}]")]
    return []


def _diverge(tmp_path: Path, method: str, *sets: str) -> tuple[Path, str, dict[str, int]]:
    """Run until it stops; returns (run folder, the one stderr line, stage -> step of its snapshot)."""
    args = ["run", "--method", method, "--protocol", "synthetic_parts", "--preset", "smoke", "--limit", "16",
            "--no-progress", "--out", str(tmp_path / "runs")]
    for item in sets:
        args += ["--set", item]
    out = run_cli_here(*args)
    assert out.returncode == 2, (out.stdout, out.stderr)
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
    folder = tmp_path / "runs" / "synthetic_parts" / method
    runs = list(folder.iterdir()) if folder.is_dir() else []
    assert len(runs) <= 1  # a run that stopped before its first snapshot may leave no folder
    run_dir = runs[0] if runs else folder / "none"
    assert not (run_dir / "checkpoints" / "final").exists() and not (run_dir / "metrics.json").exists()
    steps = {}
    for path in sorted((run_dir / "checkpoints" / "training").glob("*/*.pt")):
        state = torch.load(path, map_location="cpu", weights_only=True)  # every snapshot loads safely
        assert not _non_finite(state), (path, _non_finite(state)[:5])
        steps[path.parent.name] = int(state["step"])
    return run_dir, lines[0], steps


@pytest.mark.parametrize("method", ["ganseg", "latent_direction"])
def test_segmenter_lr_1e9_stops_and_keeps_finite_snapshots(tmp_path, method):
    _, line, steps = _diverge(tmp_path, method, "segmenter.lr=1e9")
    assert line.startswith("error: segmenter") and "not finite" in line, line  # a BatchNorm buffer
    assert "segmenter" not in steps  # diverged before its first snapshot (checkpoint_every 500)
    first = "gan" if method == "ganseg" else "dcgan"
    assert steps[first] == (4 if method == "ganseg" else 3)  # the finished earlier stage is kept, finite


@pytest.mark.parametrize("method", ["ganseg", "latent_direction"])
def test_segmenter_divergence_after_a_snapshot_keeps_that_snapshot(tmp_path, method):
    _, line, steps = _diverge(tmp_path, method, "segmenter.lr=1e9", "segmenter.checkpoint_every=1")
    assert "segmenter" in line and "step 1" in line, line
    assert steps["segmenter"] == 1


def test_gan_lr_g_1e9_stops_before_writing_a_snapshot(tmp_path):
    """The issue's setting: checkpoint_every (2) < log_every (10); the NaN losses of step 2 are
    caught at the step-2 snapshot, before it is written, and nothing non-finite reaches disk."""
    _, line, steps = _diverge(tmp_path, "ganseg", "lr_g=1e9", "log_every=10", "checkpoint_every=2")
    assert "gan training diverged at step 2" in line and "loss_d" in line, line
    assert steps == {}


def test_gan_lr_g_1e9_keeps_the_snapshot_before_the_divergence(tmp_path):
    _, line, steps = _diverge(tmp_path, "ganseg", "lr_g=1e9", "log_every=10", "checkpoint_every=1")
    assert "gan training diverged at step 2" in line and "(step 1)" in line, line
    assert steps == {"gan": 1}


def test_gan_divergence_between_snapshots_through_batchnorm_buffers(tmp_path):
    _, line, steps = _diverge(tmp_path, "ganseg", "lr_g=60", "steps=20", "log_every=10", "checkpoint_every=2")
    assert line.startswith("error: gan") and ("not finite" in line or "diverged" in line), line
    assert set(steps) <= {"gan"} and steps.get("gan", 0) < 20


def test_dcgan_lr_1e9_stops(tmp_path):
    _, line, steps = _diverge(tmp_path, "latent_direction", "generator.train_lr=1e9")
    assert line.startswith("error: dcgan") and ("not finite" in line or "diverged" in line), line
    assert set(steps) <= {"dcgan"}


def test_a_diverged_gan_continues_from_its_last_finite_snapshot_with_a_sane_lr(tmp_path):
    """What ``run --resume DIR --set lr_g=...`` relies on. Two sane steps (snapshot at 2), then
    the run is continued with lr_g=1e9: step 3 blows the weights up, the NaN losses of step 4 are
    caught before the step-4 snapshot, the step-2 one stays. lr_g is a resumable field, so
    continuing with a sane lr is accepted, starts from step 2 and runs at the new lr."""
    from dataclasses import replace

    from segbench.methods.common.loop import TrainingDiverged
    from segbench.methods.context import FitContext
    from segbench.methods.ganseg.method import GANSeg
    from segbench.methods.ganseg.train import train_gan
    from tests.test_ganseg import Images

    cfg = GANSeg.config_for("smoke", {"num_parts": 3, "steps": "4", "log_every": "10", "checkpoint_every": "2"})
    ctx = FitContext(seed=0, run_dir=tmp_path, progress=False)
    snapshot = tmp_path / "checkpoints" / "training" / "gan" / "gan.pt"
    train_gan(replace(cfg, steps=2), Images(), ctx)
    with pytest.raises(TrainingDiverged, match=r"gan training diverged at step 4: .*\(step 2\)"):
        train_gan(replace(cfg, lr_g=1e9), Images(), ctx)
    saved = torch.load(snapshot, weights_only=True)
    assert saved["step"] == 2 and not _non_finite(saved)
    generator, info = train_gan(cfg, Images(), ctx)
    assert info["resumed_from_step"] == 2 and info["gan_steps"] == 4
    assert all(torch.isfinite(t).all() for t in generator.state_dict().values() if t.is_floating_point())
    saved = torch.load(snapshot, weights_only=True)
    assert saved["step"] == 4 and not _non_finite(saved)
    assert saved["optimizers"]["opt_g"]["param_groups"][0]["lr"] == cfg.lr_g


@pytest.mark.parametrize("method, bad, sane", [
    ("ganseg", ("lr_g=1e9", "log_every=10", "checkpoint_every=2"), "lr_g=0.0002"),
    ("ganseg", ("segmenter.lr=1e9",), "segmenter.lr=0.0003"),
    ("latent_direction", ("segmenter.lr=1e9",), "segmenter.lr=0.001"),
])
def test_a_diverged_run_resumes_in_place_with_a_sane_lr(tmp_path, method, bad, sane):
    """The issue's done-when 4 through the CLI: the diverged run stops with one line (rc 2), its
    folder is kept (even before a first snapshot) with only finite snapshots, and
    ``run --resume DIR --set <lr>=<sane>`` completes it in place."""
    run_dir, line, _ = _diverge(tmp_path, method, *bad)
    assert run_dir.is_dir() and f"resume with: python -m benchmark run --resume {run_dir}" in line, line
    out = run_cli_here("run", "--resume", str(run_dir), "--set", sane, "--no-progress")
    assert out.returncode == 0, out.stderr
    assert (run_dir / "metrics.json").is_file() and (run_dir / "checkpoints" / "final" / "state.pt").is_file()
    for path in (run_dir / "checkpoints" / "training").glob("*/*.pt"):
        assert not _non_finite(torch.load(path, map_location="cpu", weights_only=True)), path
