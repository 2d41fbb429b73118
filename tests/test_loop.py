"""The training-loop core: exact resume, schedulers in the snapshot, divergence stops."""
import pytest
import torch

from segbench.benchmark.errors import UserError
from segbench.methods.common.loop import INJECT_NAN_ENV, Snapshot, TrainingDiverged, run_steps
from segbench.methods.context import StatsLog


def _loop(folder, *, seed=0, lr_decay_at=6, hidden=4):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(3, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, 1))
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[lr_decay_at], gamma=0.2)
    rng = torch.Generator().manual_seed(seed + 1)
    snap = Snapshot("toy", folder, {"seed": seed, "hidden": hidden}, modules={"model": model},
                    optimizers={"opt": opt}, schedulers={"lr": sched}, generators={"data": rng})

    def step(i):
        x = torch.randn(8, 3, generator=rng)
        noise = torch.randn(8, 1)  # the global RNG is in the snapshot too
        loss = ((model(x) - x.sum(1, keepdim=True) - 0.01 * noise) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        return {"loss": loss}

    return snap, step, model, opt


def _params(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_resume_is_bit_identical_and_restores_the_lr_schedule(tmp_path):
    snap, step, model, _ = _loop(tmp_path / "a")
    run_steps(snap, 10, step, log_every=3, checkpoint_every=4, progress=False)
    straight = _params(model)
    snap, step, model, _ = _loop(tmp_path / "b")
    run_steps(snap, 4, step, log_every=3, checkpoint_every=4, progress=False)  # "killed" after step 4
    snap, step, model, opt = _loop(tmp_path / "b")
    assert snap.resume(10) and snap.step == 4
    report = run_steps(snap, 10, step, log_every=3, checkpoint_every=4, progress=False)
    assert torch.equal(_params(model), straight)
    assert report["resumed_from_step"] == 4 and report["steps_this_call"] == 6
    assert opt.param_groups[0]["lr"] == pytest.approx(0.05 * 0.2)


def test_stats_rows_hold_window_means_throughput_and_peak_memory(tmp_path):
    snap, step, _, _ = _loop(None)
    stats = StatsLog(tmp_path / "stats.jsonl")
    run_steps(snap, 7, step, log_every=3, stats=stats, progress=False)
    rows = [__import__("json").loads(line) for line in (tmp_path / "stats.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [3, 6, 7]
    assert all(r["phase"] == "toy" and r["it_s"] > 0 and r["peak_mem_mb"] > 0 and "loss" in r for r in rows)


def test_a_nan_at_step_k_stops_with_the_last_finite_snapshot(tmp_path, monkeypatch):
    monkeypatch.setenv(INJECT_NAN_ENV, "toy@7")
    snap, step, _, _ = _loop(tmp_path)
    with pytest.raises(TrainingDiverged, match=r"toy training diverged at step 7: non-finite loss; kept .* \(step 4\)"):
        run_steps(snap, 10, step, log_every=3, checkpoint_every=4, progress=False)
    saved = torch.load(tmp_path / "toy.pt", weights_only=True)
    assert saved["step"] == 4
    assert all(torch.isfinite(t).all() for t in saved["modules"]["model"].values())


def test_a_snapshot_of_another_run_or_a_corrupt_file_is_one_clear_error(tmp_path):
    snap, step, _, _ = _loop(tmp_path)
    run_steps(snap, 4, step, log_every=3, progress=False)
    other, _, _, _ = _loop(tmp_path, hidden=5)
    with pytest.raises(UserError, match=r"different toy run \(changed: hidden\)"):
        other.resume(10)
    shorter, _, _, _ = _loop(tmp_path)
    with pytest.raises(UserError, match="past the configured 2 steps"):
        shorter.resume(2)
    (tmp_path / "toy.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="unreadable training snapshot"):
        _loop(tmp_path)[0].resume(10)


def test_a_real_divergence_between_sync_points_never_reaches_a_snapshot(tmp_path):
    """checkpoint_every < log_every: the check runs before every snapshot, not only at log rows."""
    snap, step, model, opt = _loop(tmp_path)

    def exploding(i):
        if i == 4:  # step 5: a huge lr makes the weights and the next losses inf/nan
            opt.param_groups[0]["lr"] = 1e38
        return step(i)

    with pytest.raises(TrainingDiverged, match=r"diverged at step [67]: non-finite loss; kept .* \(step 4\)"):
        run_steps(snap, 20, exploding, log_every=10, checkpoint_every=2, progress=False)
    saved = torch.load(tmp_path / "toy.pt", weights_only=True)
    assert saved["step"] == 4 and all(torch.isfinite(t).all() for t in saved["modules"]["model"].values())
