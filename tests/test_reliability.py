"""Issue 14, run lifecycle and the one error path: every probe of the issue in this scope as a case.

Each case: the command, its exit code, one stderr line naming the cause, no traceback, and
nothing lost (no half-made run folder for a failed command; progress, logs and other runs kept).
Methods: centre_prior / dummy at ``--preset smoke --limit 8``; one GANSeg and one latent_direction
smoke run (module fixtures) where training snapshots matter; copies of those for destructive probes.
Subprocesses only where a real process matters (SIGINT, a closed stdout, no torch import, the
lock and the writer/reader race).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from segbench.benchmark.errors import RunInterrupted, UserError
from segbench.methods.context import read_stats, write_json_atomic
from tests.conftest import REPO, run_cli_here

SMOKE = ("--preset", "smoke", "--limit", "8", "--no-progress", "--device", "cpu")


def one_line(res, code: int, *fragments: str) -> str:
    """``res`` exited ``code`` with exactly one stderr line holding every fragment, no traceback."""
    err = res.stderr.strip()
    assert res.returncode == code, (res.returncode, res.stdout[-2000:], res.stderr[-4000:])
    assert "Traceback" not in res.stderr, res.stderr
    assert len(err.splitlines()) == 1, err
    assert err.startswith("error: ") or code != 2, err
    for fragment in fragments:
        assert fragment in err, (fragment, err)
    return err


def run_here(*args: str):
    return run_cli_here(*args)


def new_run(out: Path, method: str = "centre_prior", *extra: str) -> Path:
    res = run_here("run", "--method", method, "--protocol", "synthetic_parts", *SMOKE, "--threads", "1",
                   "--out", str(out), *extra)
    assert res.returncode == 0, res.stderr
    return Path(next(l for l in res.stdout.splitlines() if l.startswith("run directory:")).split(":", 1)[1].strip())


def run_folders(out: Path) -> list[Path]:
    return sorted(p for p in Path(out).glob("*/*/*") if p.is_dir())


def stats_rows(run_dir: Path) -> list[dict]:
    return [json.loads(l) for l in (run_dir / "stats.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def centre_run(tmp_path_factory) -> Path:
    return new_run(tmp_path_factory.mktemp("centre"))


@pytest.fixture(scope="module")
def ganseg_run(tmp_path_factory) -> Path:
    """A finished GANSeg smoke run: snapshots gan.pt (step 4) and segmenter.pt."""
    return new_run(tmp_path_factory.mktemp("ganseg"), "ganseg")


@pytest.fixture
def copy_run(tmp_path):
    def copy(src: Path) -> Path:
        dst = tmp_path / "copies" / src.name
        shutil.copytree(src, dst)
        return dst
    return copy


# ----------------------------------------------------------------------------- early validation

@pytest.mark.parametrize("args,fragment", [
    (["--limit", "0"], "--limit 0: must be an integer >= 1"),
    (["--limit", "-5"], "--limit -5: must be an integer >= 1"),
    (["--batch-size", "0"], "--batch-size 0: must be an integer >= 1"),
    (["--batch-size", "-1"], "--batch-size -1: must be an integer >= 1"),
    (["--seed", "-1"], "--seed -1: must be an integer >= 0"),
    (["--threads", "-3"], "--threads -3: must be an integer >= 0"),
    (["--set", "nosuch=1"], "--set nosuch: unknown config key 'nosuch'"),
    (["--device", "tpu"], "--device tpu"),
])
def test_bad_run_flags_are_one_line_and_leave_nothing_on_disk(tmp_path, args, fragment):
    out = tmp_path / "out"
    for dry in ([], ["--dry-run"]):
        res = run_here("run", "--method", "centre_prior", "--protocol", "synthetic_parts", "--preset", "smoke",
                       "--no-progress", "--out", str(out), *args, *dry)
        one_line(res, 2, fragment)
        assert not out.exists()


def test_out_that_is_not_a_writable_folder_is_one_line(tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    for out, fragment in [(a_file, f"--out {a_file}: is a file, not a folder"),
                          (a_file / "sub", f"--out {a_file / 'sub'}: {a_file} is not a folder"),
                          ("/dev/null", "--out /dev/null: is a file, not a folder"),
                          ("/proc/segbench-no-such/runs", "--out /proc/segbench-no-such/runs: cannot create a folder "
                                                          "in /proc")]:
        res = run_here("run", "--method", "centre_prior", "--protocol", "synthetic_parts", *SMOKE, "--out", str(out))
        one_line(res, 2, "error: " + fragment)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]  # no probe folder left


def test_unknown_preset_is_refused_without_importing_torch():
    code = ("import sys, time; t = time.perf_counter()\n"
            "from segbench.benchmark.cli import main\n"
            "rc = main(['run', '--method', 'centre_prior', '--protocol', 'synthetic_parts', '--preset', 'quik'])\n"
            "assert rc == 2, rc\n"
            "assert 'torch' not in sys.modules, 'imported torch'\n"
            "print(round(time.perf_counter() - t, 3))")
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert res.returncode == 0, res.stderr
    assert res.stderr.strip() == "error: unknown preset 'quik'; did you mean quick?"
    assert float(res.stdout) < 1.0


def test_every_builtin_method_has_exactly_the_known_presets():
    """What makes the torch-free preset check above exact for built-in methods."""
    from segbench.benchmark.cli import BUILTIN_EXTRA_PRESETS
    from segbench.benchmark.config import PRESET_NAMES
    from segbench.methods import METHODS
    for entry in METHODS.entries():
        if entry.origin == "builtin":
            expected = {*PRESET_NAMES, *BUILTIN_EXTRA_PRESETS.get(entry.name, ())}
            assert set(METHODS.get(entry.name).PRESETS) == expected, entry.name
    one_line(run_here("run", "--method", "latent_direction", "--protocol", "synthetic_parts", "--preset", "paper_a1",
                      "--dry-run"), 2, "error: unknown preset 'paper_a1'; did you mean paper_a12")


@pytest.mark.parametrize("args,fragment", [
    (["bench-data", "--resolution", "0"], "--resolution 0: must be an integer >= 1"),
    (["bench-data", "--resolution", "32", "-3"], "--resolution -3"),
    (["bench-data", "--n", "0"], "--n 0: must be an integer >= 1"),
    (["prepare", "celeba_wild", "--image-size", "0"], "--image-size 0: must be an integer >= 1"),
    (["prepare", "celeba_wild", "--workers", "-1"], "--workers -1: must be an integer >= 1"),
    (["prepare", "celeba_wild", "--split", "nosuch"], "--split nosuch: celeba_wild has no such split"),
    (["prepare", "celeba_wild", "--data-root", "/nonexistent-segbench"], "img_celeba not found"),
    (["import-checkpoint", "ganseg", "/nonexistent.model", "--protocol", "synthetic_parts"],
     "path /nonexistent.model: no such file"),
    (["eval", "/nonexistent-segbench-run"], "no such run directory"),
])
def test_other_commands_user_errors_are_one_line(args, fragment):
    one_line(run_here(*args), 2, fragment)


def test_fid_check_user_errors_are_one_line(tmp_path, capsys):
    from segbench.benchmark import fid_check
    for argv, fragment in [(["--batch-size", "0"], "--batch-size 0: must be an integer >= 1"),
                           (["--n-cross", "1"], "--n-cross 1: must be an integer >= 2"),
                           (["--data-root", str(tmp_path / "none")], "no such folder"),
                           (["--data-root", str(tmp_path)], "need "),
                           (["--json", "/proc/segbench-x/out.json"], "--json /proc/segbench-x/out.json")]:
        assert fid_check.main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.startswith("error: ") and fragment in err, err


def test_debug_shows_the_traceback():
    for argv in (["--debug", "run"], ["run", "--debug"]):
        res = run_here(*argv, "--method", "centre_prior", "--protocol", "synthetic_parts", "--limit", "0")
        assert res.returncode == 2 and "Traceback" in res.stderr
        assert res.stderr.strip().splitlines()[-1] == "error: --limit 0: must be an integer >= 1 (images per split; " \
                                                      "leave it out for all)"


# ----------------------------------------------------------------------------- failures inside a run

def _patch_fit(monkeypatch, effect):
    from segbench.methods import METHODS
    cls = METHODS.get("centre_prior")

    def fit(self, images, ctx):
        effect(ctx)
    monkeypatch.setattr(cls, "fit", fit)


def test_a_failure_before_any_progress_removes_the_run_folder(tmp_path, monkeypatch):
    def fail(ctx):
        ctx.log(phase="x", step=1)
        raise UserError("bad data in some_file.png")
    _patch_fit(monkeypatch, fail)
    out = tmp_path / "out"
    one_line(run_here("run", "--method", "centre_prior", "--protocol", "synthetic_parts", *SMOKE, "--out", str(out)),
             2, "error: bad data in some_file.png")
    assert not out.exists()  # nor the protocol/method folders this run made


def test_ctrl_c_before_any_progress_exits_130_and_removes_the_folder(tmp_path, monkeypatch):
    def interrupt(ctx):
        raise KeyboardInterrupt
    _patch_fit(monkeypatch, interrupt)
    (tmp_path / "out").mkdir()
    res = run_here("run", "--method", "centre_prior", "--protocol", "synthetic_parts", *SMOKE,
                   "--out", str(tmp_path / "out"))
    assert one_line(res, 130) == "interrupted before any progress was saved; nothing to resume (run folder removed)"
    assert list((tmp_path / "out").iterdir()) == []  # --out itself existed before: kept


def test_ctrl_c_after_a_snapshot_keeps_the_folder_logs_it_and_says_how_to_resume(tmp_path, monkeypatch):
    def interrupt(ctx):
        torch.save({"step": 3}, ctx.checkpoint_dir("stage") / "stage.pt")
        raise KeyboardInterrupt
    _patch_fit(monkeypatch, interrupt)
    res = run_here("run", "--method", "centre_prior", "--protocol", "synthetic_parts", *SMOKE,
                   "--out", str(tmp_path))
    (run_dir,) = run_folders(tmp_path)
    assert one_line(res, 130) == f"interrupted; resume with: python -m benchmark run --resume {run_dir}"
    assert stats_rows(run_dir)[-1]["phase"] == "error" and stats_rows(run_dir)[-1]["type"] == "KeyboardInterrupt"
    assert "interrupted; resume with" in (run_dir / "log.txt").read_text()
    monkeypatch.undo()
    res = run_here("run", "--resume", str(run_dir), "--no-progress")  # and the hint works
    assert res.returncode == 0, res.stderr
    resumed = [r for r in stats_rows(run_dir) if r["phase"] == "resumed"]
    assert resumed[0]["from_step"] == {"stage": 3} and resumed[0]["session"] == 2


def test_a_bug_is_a_traceback_and_is_logged_but_keeps_progress(tmp_path, monkeypatch):
    def crash(ctx):
        torch.save({"step": 1}, ctx.checkpoint_dir("stage") / "stage.pt")
        raise ZeroDivisionError("a bug")
    _patch_fit(monkeypatch, crash)
    with pytest.raises(ZeroDivisionError) as info:
        run_here("run", "--method", "centre_prior", "--protocol", "synthetic_parts", *SMOKE, "--out", str(tmp_path))
    (run_dir,) = run_folders(tmp_path)
    assert any("resume with" in note for note in getattr(info.value, "__notes__", []))
    assert "ZeroDivisionError: a bug" in (run_dir / "log.txt").read_text()


def _signal_mid_training(out: Path, signum: int) -> tuple[subprocess.CompletedProcess, Path]:
    """``python -m benchmark run`` of GANSeg (smoke, snapshots every 2 steps, steps without end) in
    a real process, sent ``signum`` once its first snapshot is on disk; (its result, its run folder)."""
    proc = subprocess.Popen([sys.executable, "-m", "benchmark", "run", "--method", "ganseg", "--protocol",
                             "synthetic_parts", *SMOKE, "--threads", "1", "--out", str(out),
                             "--set", "steps=1000000"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        deadline = time.monotonic() + 120
        while not list(out.glob("*/*/*/checkpoints/training/gan/gan.pt")):
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()  # before communicate(): a run without end would never close its pipes
                pytest.fail(f"no snapshot within 120 s (exit {proc.poll()}): {proc.communicate()}")
            time.sleep(0.1)
        time.sleep(0.3)
        proc.send_signal(signum)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    (run_dir,) = run_folders(out)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr), run_dir


def test_ctrl_c_of_a_real_process_is_one_line_130_and_the_run_resumes(tmp_path, monkeypatch):
    """SIGINT to ``python -m benchmark run`` mid-training."""
    res, run_dir = _signal_mid_training(tmp_path / "out", signal.SIGINT)
    assert one_line(res, 130) == f"interrupted; resume with: python -m benchmark run --resume {run_dir}"
    assert "interrupted; resume with" in (run_dir / "log.txt").read_text()
    assert stats_rows(run_dir)[-1]["type"] == "KeyboardInterrupt"
    from segbench.benchmark.runner import snapshot_steps
    step = snapshot_steps(run_dir)["gan"]
    assert step >= 2
    # Nothing lost: the run continues from its snapshot (steps is a resumable field).
    res = run_here("run", "--resume", str(run_dir), "--no-progress", "--set", f"steps={step}")
    assert res.returncode == 0, res.stderr
    assert (run_dir / "metrics.json").is_file()
    resumed = next(r for r in stats_rows(run_dir) if r["phase"] == "resumed")
    assert resumed["from_step"]["gan"] == step and resumed["overrides"] == {"steps": str(step)}


def test_sigterm_is_recorded_like_ctrl_c_and_the_run_resumes(tmp_path):
    """SIGTERM (scancel, a SLURM time limit, torchrun stopping the ranks) mid-training: recorded in
    the run and resumable, instead of a process that dies without a word."""
    res, run_dir = _signal_mid_training(tmp_path / "out", signal.SIGTERM)
    assert one_line(res, 130) == f"terminated (SIGTERM); resume with: python -m benchmark run --resume {run_dir}"
    assert "terminated (SIGTERM); resume with" in (run_dir / "log.txt").read_text()
    assert stats_rows(run_dir)[-1]["type"] == "Terminated"
    dry = run_here("run", "--resume", str(run_dir), "--dry-run")
    assert dry.returncode == 0, dry.stderr


def test_closed_stdout_is_no_traceback(tmp_path):
    """``run ... | head``: stdout's reader is gone before the run prints its table."""
    proc = subprocess.Popen([sys.executable, "-m", "benchmark", "run", "--method", "centre_prior", "--protocol",
                             "synthetic_parts", *SMOKE, "--out", str(tmp_path)], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(REPO)})
    proc.stdout.close()
    stderr = proc.stderr.read().decode()
    proc.wait(timeout=120)
    assert proc.returncode == 141 and stderr == "", stderr
    (run_dir,) = run_folders(tmp_path)
    assert (run_dir / "metrics.json").is_file()  # the run itself finished and is recorded


def test_divergence_is_one_line_logged_keeps_the_last_finite_snapshot_and_resumes(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGBENCH_INJECT_NAN", "gan@3")  # step 3 of 4: snapshot of step 2 on disk
    res = run_here("run", "--method", "ganseg", "--protocol", "synthetic_parts", *SMOKE, "--threads", "1",
                   "--out", str(tmp_path))
    (run_dir,) = run_folders(tmp_path)
    err = one_line(res, 2, "error: gan training diverged at step 3", "kept the last finite snapshot",
                   f"resume with: python -m benchmark run --resume {run_dir}")
    assert err.split("error: ", 1)[1] in (run_dir / "log.txt").read_text()
    error = stats_rows(run_dir)[-1]
    assert error["phase"] == "error" and error["type"] == "TrainingDiverged"
    snapshot = torch.load(run_dir / "checkpoints/training/gan/gan.pt", weights_only=True)
    assert snapshot["step"] == 2
    assert all(torch.isfinite(t).all() for m in snapshot["modules"].values() for t in m.values()
               if t.is_floating_point())
    assert not (run_dir / "metrics.json").exists()
    monkeypatch.delenv("SEGBENCH_INJECT_NAN")
    res = run_here("run", "--resume", str(run_dir), "--no-progress", "--set", "lr_g=5e-5")
    assert res.returncode == 0, res.stderr
    config = json.loads((run_dir / "config.json").read_text())
    assert config["resumes"][-1]["overrides"] == {"lr_g": "5e-5"} and config["method_config"]["lr_g"] == 5e-5
    assert config["request"]["overrides"] == {}  # the request it started with stays as it was


def test_divergence_before_the_first_snapshot_keeps_the_folder_to_resume_with_saner_settings(tmp_path, monkeypatch):
    """A diverged run is a record (log, stats) and is resumed in place with e.g. a lower lr."""
    monkeypatch.setenv("SEGBENCH_INJECT_NAN", "gan@1")
    res = run_here("run", "--method", "ganseg", "--protocol", "synthetic_parts", *SMOKE, "--threads", "1",
                   "--out", str(tmp_path / "out"))
    err = one_line(res, 2, "error: gan training diverged at step 1", "no snapshot was written yet")
    (run_dir,) = (tmp_path / "out").glob("synthetic_parts/ganseg/*")
    assert f"resume with: python -m benchmark run --resume {run_dir}" in err
    assert "diverged" in (run_dir / "log.txt").read_text()
    assert not list((run_dir / "checkpoints").rglob("*.pt"))


# ----------------------------------------------------------------------------- resume

@pytest.mark.parametrize("args,fragment", [
    (["--seed", "3"], "--seed 3 differs from the run's 0"),
    (["--method", "centre_prior"], "--method centre_prior differs"),
    (["--preset", "quick"], "--preset quick differs"),
    (["--limit", "16"], "--limit 16 differs from the run's 8"),
    (["--batch-size", "8"], "--batch-size 8 differs from the run's 32"),
    (["--out", "elsewhere"], "--out elsewhere differs"),
    (["--set", "batch_size=8"], "--set batch_size=8 would change batch_size (the run has 4); a resume may change "
                                "only: steps, log_every"),
    (["--set", "nosuch=1"], "--set nosuch: unknown config key 'nosuch'"),
    (["--data-root", "/tmp/segbench-elsewhere"], "the run finished on data root"),
    (["--threads", "-1"], "--threads -1"),
    (["--device", "tpu"], "--device tpu"),
])
def test_resume_refuses_flags_that_change_the_run(ganseg_run, args, fragment):
    before = {p: p.stat().st_mtime_ns for p in ganseg_run.rglob("*") if p.is_file()}
    one_line(run_here("run", "--resume", str(ganseg_run), "--no-progress", *args), 2,
             f"error: --resume {ganseg_run}: " if not fragment.startswith("--") else "error: ", fragment)
    assert {p: p.stat().st_mtime_ns for p in ganseg_run.rglob("*") if p.is_file()} == before  # untouched


def test_resume_accepts_same_values_resumable_fields_and_runtime_flags(ganseg_run, copy_run):
    run_dir = copy_run(ganseg_run)
    env = json.loads((run_dir / "env.json").read_text())
    (run_dir / "env.json").write_text(json.dumps(env[0]))  # an older run's one-object env.json
    res = run_here("run", "--resume", str(run_dir), "--no-progress", "--debug", "--device", "cpu", "--threads", "1",
                   "--seed", "0", "--limit", "8", "--preset", "smoke", "--set", "batch_size=4",
                   "--set", "segmenter.steps=4")
    assert res.returncode == 0, res.stderr
    config = json.loads((run_dir / "config.json").read_text())
    (entry,) = config["resumes"]
    assert entry["overrides"] == {"segmenter.steps": "4"} and entry["num_threads"] == 1 and entry["session"] == 2
    assert entry["from_step"] == {"gan": 4, "segmenter": 3} and entry["git_hash"] == config["git_hash"]
    assert config["method_config"]["segmenter"]["steps"] == 4
    history = json.loads((run_dir / "env.json").read_text())
    assert [e["event"] for e in history] == ["start", "resume"]
    # Stats: the marker, then the redone segmenter step 4 only (no GAN step repeated).
    rows = stats_rows(run_dir)
    marker = next(i for i, r in enumerate(rows) if r["phase"] == "resumed")
    assert [r.get("step") for r in rows[marker:] if r["phase"] in ("gan", "segmenter")] == [4]
    # A second resume sees the recorded change (no --set needed again).
    res = run_here("run", "--resume", str(run_dir), "--no-progress", "--dry-run")
    assert res.returncode == 0, res.stderr


def test_read_stats_drops_the_rows_a_resume_superseded(tmp_path):
    rows = [{"phase": "gan", "step": 2}, {"phase": "gan", "step": 4}, {"phase": "samples", "step": 4},
            {"phase": "gan", "step": 6}, {"phase": "resumed", "from_step": {"gan": 4}},
            {"phase": "gan", "step": 6}, {"phase": "gan", "step": 8}]
    path = tmp_path / "stats.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"phase": "gan", "st')  # a cut last line
    assert [(r["phase"], r.get("step")) for r in read_stats(path)] == [
        ("gan", 2), ("gan", 4), ("samples", 4), ("resumed", None), ("gan", 6), ("gan", 8)]


def test_a_second_command_on_a_locked_run_folder_exits_2(ganseg_run):
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import fcntl, os, sys, time
        fd = os.open({str(ganseg_run / '.lock')!r}, os.O_RDWR | os.O_CREAT)
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, b"resume by pid %d" % os.getpid())
        print("locked", flush=True)
        sys.stdin.read()
        """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        for args in (["run", "--resume", str(ganseg_run), "--no-progress"], ["eval", str(ganseg_run), "--no-progress"]):
            one_line(run_here(*args), 2, f"error: {ganseg_run} is in use (resume by pid {holder.pid})",
                     "one run, resume or eval of a run folder at a time")
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    assert not (ganseg_run / "metrics_rescored.json").exists()


# ----------------------------------------------------------------------------- corrupt run files

def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _random(path: Path) -> None:
    path.write_bytes(os.urandom(4096))


@pytest.mark.parametrize("command", ["eval", "resume"])
@pytest.mark.parametrize("name,damage,fragment", [
    ("config.json", _truncate, "config.json: not valid JSON"),
    ("config.json", lambda p: p.write_text(""), "config.json: empty; truncated or corrupt"),
    ("config.json", lambda p: p.write_text('{"request": {"method": "ganseg", "protocol": "synthetic_parts", '
                                          '"limit": 0}}'), "config.json: the recorded request is invalid (--limit 0"),
    ("config.json", lambda p: p.write_text("[1, 2]"), "config.json: not a segbench run config"),
    ("checkpoints/final/method_config.json", _truncate, "method_config.json: not valid JSON"),
    ("checkpoints/final/state.pt", _truncate, "state.pt: unreadable checkpoint"),
    ("checkpoints/final/state.pt", _random, "state.pt: unreadable checkpoint"),
    ("checkpoints/training/gan/gan.pt", _truncate, "gan.pt: unreadable training snapshot"),
    ("checkpoints/training/segmenter/segmenter.pt", _random, "segmenter.pt: unreadable training snapshot"),
])
def test_corrupt_run_files_are_one_line_naming_the_file(ganseg_run, copy_run, command, name, damage, fragment):
    run_dir = copy_run(ganseg_run)
    damage(run_dir / name)
    args = ["eval", str(run_dir)] if command == "eval" else ["run", "--resume", str(run_dir)]
    res = run_here(*args, "--no-progress")
    reads = command == "eval" and "training" not in name or command == "resume" and "final" not in name
    if reads:
        one_line(res, 2, f"error: {run_dir / name}" if "recorded request" not in fragment else "error: ", fragment)
    else:  # eval does not read training snapshots; resume refits and does not read the final checkpoint
        assert res.returncode == 0, res.stderr


def test_method_load_names_a_foreign_state_dict(ganseg_run, copy_run):
    run_dir = copy_run(ganseg_run)
    torch.save({"unexpected": torch.zeros(2)}, run_dir / "checkpoints/final/state.pt")
    one_line(run_here("eval", str(run_dir), "--no-progress"), 2, f"{run_dir}/checkpoints/final/state.pt: does not "
                                                                 "match GANSeg with method_config.json")


def test_eval_of_an_interrupted_run_says_resume(ganseg_run, copy_run):
    run_dir = copy_run(ganseg_run)
    shutil.rmtree(run_dir / "checkpoints/final")
    (run_dir / "metrics.json").unlink()
    err = one_line(run_here("eval", str(run_dir), "--no-progress"), 2)
    assert err == (f"error: run {run_dir} did not finish (no {run_dir}/checkpoints/final/state.pt): resume with: "
                   f"python -m benchmark run --resume {run_dir}")


def test_eval_records_todays_code_the_training_code_and_its_batch_size(centre_run, copy_run):
    from segbench.benchmark.records import git_label, git_state
    run_dir = copy_run(centre_run)
    config = json.loads((run_dir / "config.json").read_text())
    config["train_git_hash"] = "0123456789ab"
    (run_dir / "config.json").write_text(json.dumps(config))
    (run_dir / "metrics.json").write_text('[{"date": "2020-01-0')  # corrupt: only read for the date
    res = run_here("eval", str(run_dir), "--no-progress", "--batch-size", "3")
    assert res.returncode == 0 and res.stderr == "", res.stderr
    records = json.loads((run_dir / "metrics_rescored.json").read_text())
    assert {r["batch_size"] for r in records} == {3} and {r["limit"] for r in records} == {8}
    assert {r["train_git_hash"] for r in records} == {"0123456789ab"}
    assert {r["git_hash"] for r in records} == {git_label(git_state())}
    assert {r["date"] for r in records} == {config["started"][:10]}
    assert stats_rows(run_dir)[-1]["phase"] == "rescored"
    one_line(run_here("eval", str(run_dir), "--batch-size", "0"), 2, "error: --batch-size 0: must be an integer >= 1")


# ----------------------------------------------------------------------------- run folders are data

MARKER_MODULE = "segbench_test_marker_target"


@pytest.fixture
def marker(tmp_path, monkeypatch):
    """A module whose import (and whose factory) creates a marker file."""
    flag = tmp_path / "marker_was_created"
    pkg = tmp_path / "plugin"
    pkg.mkdir()
    (pkg / f"{MARKER_MODULE}.py").write_text(textwrap.dedent(f"""
        from pathlib import Path
        Path({str(flag)!r}).write_text("imported")

        def make(checkpoint):
            Path({str(flag)!r}).write_text("called")
            return object()  # no z_dim: the method stops right after, with one line
        """))
    monkeypatch.syspath_prepend(str(pkg))
    yield flag
    sys.modules.pop(MARKER_MODULE, None)


@pytest.fixture(scope="module")
def latent_run(tmp_path_factory) -> Path:
    return new_run(tmp_path_factory.mktemp("latent"), "latent_direction")


def test_a_code_target_in_a_run_folder_is_not_imported_unless_trusted(latent_run, copy_run, marker):
    run_dir = copy_run(latent_run)
    config = json.loads((run_dir / "config.json").read_text())
    target = f"{MARKER_MODULE}:make"
    config["request"]["overrides"]["generator.target"] = target  # as a copied, edited run folder would
    (run_dir / "config.json").write_text(json.dumps(config))
    saved = run_dir / "checkpoints/final/method_config.json"
    for args in (["eval", str(run_dir)], ["run", "--resume", str(run_dir)], ["run", "--resume", str(run_dir),
                                                                              "--dry-run"]):
        one_line(run_here(*args, "--no-progress"), 2, f"error: {run_dir}/config.json sets generator.target={target}",
                 "--trust-run-config")
        assert not marker.exists() and MARKER_MODULE not in sys.modules
    # method_config.json of the final checkpoint is data too.
    config["request"]["overrides"].pop("generator.target")
    (run_dir / "config.json").write_text(json.dumps(config))
    method_config = json.loads(saved.read_text())
    method_config["generator"]["target"] = target
    saved.write_text(json.dumps(method_config))
    one_line(run_here("eval", str(run_dir), "--no-progress"), 2, f"error: {saved} sets generator.target={target}")
    assert not marker.exists()


def test_a_code_target_runs_when_the_command_line_names_it(latent_run, copy_run, marker):
    run_dir = copy_run(latent_run)
    config = json.loads((run_dir / "config.json").read_text())
    target = f"{MARKER_MODULE}:make"
    config["request"]["overrides"]["generator.target"] = target
    (run_dir / "config.json").write_text(json.dumps(config))
    for trust in (["--set", f"generator.target={target}"], ["--trust-run-config"]):
        res = run_here("run", "--resume", str(run_dir), "--no-progress", *trust)
        one_line(res, 2, "generator.target", "z_dim")  # imported and called: the marker shows it
        assert marker.read_text() == "called"
        marker.unlink()
        sys.modules.pop(MARKER_MODULE, None)


# ----------------------------------------------------------------------------- atomic records

READER = textwrap.dedent("""
    import json, sys, os
    path, stop = sys.argv[1], sys.argv[2]
    reads = bad = 0
    print("ready", flush=True)
    while not os.path.exists(stop):
        try:
            with open(path) as fh:
                text = fh.read()
        except FileNotFoundError:
            continue
        reads += 1
        try:
            json.loads(text)
        except ValueError:
            bad += 1
    print(json.dumps({"reads": reads, "bad": bad}))
    """)


@pytest.mark.parametrize("name", ["metrics.json", "config.json"])
def test_readers_never_see_a_partial_file(tmp_path, name):
    """Writer (this process, the runner's atomic writer) and reader (another process), 3000 rewrites."""
    path, stop = tmp_path / name, tmp_path / "stop"
    write_json_atomic(path, [])
    reader = subprocess.Popen([sys.executable, "-c", READER, str(path), str(stop)], stdout=subprocess.PIPE, text=True)
    try:
        assert reader.stdout.readline().strip() == "ready"
        for i in range(3000):  # sizes vary from ~100 bytes to ~40 kB
            write_json_atomic(path, [{"metric": "fg_iou", "value": i / 7, "pad": "x" * (i % 97)}] * (1 + i % 150))
        stop.touch()
        result = json.loads(reader.stdout.readline())
    finally:
        stop.touch()
        reader.wait(timeout=60)
    assert result["bad"] == 0 and result["reads"] > 100, result
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([name, "stop"])  # no temporary file left


def test_run_records_are_written_atomically(centre_run):
    from segbench.benchmark import runner
    import inspect
    source = inspect.getsource(runner)
    assert "write_json(" not in source.replace("write_json_atomic(", "")
    assert not [p for p in centre_run.rglob("*") if p.name.endswith(".tmp")]
    assert isinstance(RunInterrupted("x"), UserError) and RunInterrupted.exit_code == 130
