"""``reproduce``'s executors without real runs: local workers pinned to GPUs (``--gpus``), and
Ctrl-C of ``--executor slurm`` cancelling the jobs it submitted. The real-run tests are in
test_reproduce.py."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from segbench.benchmark import reproduce_exec
from segbench.benchmark.errors import UserError
from segbench.benchmark.reproduce import plan_table
from segbench.benchmark.reproduce_exec import (Progress, SlurmRequest, cells_to_execute, describe_workers, local_gpus,
                                               run_cell, run_local, run_slurm)
from segbench.benchmark.table_manifest import load_manifest
from tests.conftest import run_cli_here

TINY = str(Path(__file__).resolve().parent / "fixtures" / "reproduce" / "tiny.toml")


def tiny_plan(out: Path):
    return plan_table(load_manifest(TINY), out=str(out))  # 3 cells, none run yet


# ---------------------------------------------------------------- which GPUs


def _fake_cuda(monkeypatch, count: int) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)


def test_gpus_given_are_used_as_written():
    assert local_gpus("0,2", None) == ["0", "2"]
    assert local_gpus(" 1 , 3 ", "cuda") == ["1", "3"]
    assert local_gpus("none", None) == [] and local_gpus("NONE", "cpu") == []


@pytest.mark.parametrize("spec, device, words", [("0,0", None, "distinct"), ("0,", None, "distinct"),
                                                 ("0,1", "cpu", "--device cpu"),
                                                 ("0,1", "cuda:1", "sees its one GPU as cuda:0")])
def test_bad_gpus_are_user_errors(spec, device, words):
    with pytest.raises(UserError, match=words):
        local_gpus(spec, device)


def test_automatic_gpus_are_every_visible_one_when_there_are_several(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    _fake_cuda(monkeypatch, 4)
    assert local_gpus(None, None) == ["0", "1", "2", "3"] == local_gpus(None, "auto") == local_gpus(None, "cuda")
    assert local_gpus(None, "cpu") == [] and local_gpus(None, "cuda:1") == []  # the user chose the device
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5,7,2,3")
    assert local_gpus(None, None) == ["5", "7", "2", "3"]  # physical ids, as the parent sees them
    _fake_cuda(monkeypatch, 1)
    assert local_gpus(None, None) == []  # one GPU: nothing to spread, the environment is left alone
    _fake_cuda(monkeypatch, 0)
    assert local_gpus(None, None) == []


def test_worker_description_names_each_slot_gpu(monkeypatch):
    monkeypatch.setattr(reproduce_exec, "available_cores", lambda: 8)
    assert describe_workers(4, []) == "local: 4 worker(s) x 2 thread(s)"
    assert describe_workers(4, ["0", "1"]) == \
        "local: 4 worker(s) x 2 thread(s), CUDA_VISIBLE_DEVICES per worker: 0, 1, 0, 1"
    assert describe_workers(16, []) == "local: 8 worker(s) x 1 thread(s) (--jobs 16 capped at the 8 cores)"


# ---------------------------------------------------------------- local workers on their GPUs


def test_local_workers_run_each_cell_on_their_own_gpu(tmp_path, monkeypatch):
    monkeypatch.setattr(reproduce_exec, "available_cores", lambda: 2)
    calls, lock = [], threading.Lock()

    def fake_run_cell(args, log_path, cwd, threads, extra_env=None):
        start = time.monotonic()
        time.sleep(0.3)
        with lock:
            calls.append((start, time.monotonic(), extra_env["CUDA_VISIBLE_DEVICES"], threads))
        return 0, f"/runs/{Path(log_path).stem}", ""

    monkeypatch.setattr(reproduce_exec, "run_cell", fake_run_cell)
    plan = tiny_plan(tmp_path / "runs")
    progress = Progress(plan, print_line=lambda line: None)
    outcomes = run_local(plan, cells_to_execute(plan), 2, progress, progress_every=60, gpus=["4", "6"])
    assert len(outcomes) == len(calls) == 3 and {o.status for o in outcomes} == {"done"}
    assert {gpu for *_, gpu, _ in calls} == {"4", "6"} and {t for *_, t in calls} == {1}
    for i, (start_a, end_a, gpu_a, _) in enumerate(calls):  # cells running at once never share a GPU
        for start_b, end_b, gpu_b, _ in calls[i + 1:]:
            if start_a < end_b and start_b < end_a:
                assert gpu_a != gpu_b, calls


def test_run_cell_passes_the_gpu_and_writes_it_in_the_log(tmp_path):
    log = tmp_path / "cell.log"
    code, run_dir, error = run_cell(["ls", "methods"], str(log), str(Path(__file__).resolve().parents[1]), 1,
                                    {"CUDA_VISIBLE_DEVICES": "3"})
    assert (code, run_dir, error) == (0, "", "")
    header = log.read_text().splitlines()[0]
    assert header.endswith(" CUDA_VISIBLE_DEVICES=3 python -m segbench ls methods"), header


def test_cli_gpus_flag(tmp_path):
    dry = run_cli_here("reproduce", TINY, "--dry-run", "--out", str(tmp_path), "--jobs", "2", "--gpus", "1,3")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.splitlines()[-1].endswith(", CUDA_VISIBLE_DEVICES per worker: 1, 3")
    for args, words in ((("--gpus", "1,1"), "--gpus 1,1"), (("--gpus", "0", "--device", "cpu"), "--device cpu"),
                        (("--gpus", "0", "--executor", "slurm"), "--executor local")):
        bad = run_cli_here("reproduce", TINY, "--dry-run", "--out", str(tmp_path), *args)
        assert bad.returncode == 2 and bad.stderr.startswith("error: ") and words in bad.stderr, bad.stderr
        assert len(bad.stderr.strip().splitlines()) == 1


# ---------------------------------------------------------------- Ctrl-C on SLURM


class FakeJob:
    def __init__(self, job_id: str, done: bool) -> None:
        self.job_id, self._done, self.cancelled = job_id, done, False

    def done(self) -> bool:
        return self._done

    def result(self):
        return 0, "/runs/x", ""

    def cancel(self, check: bool = True) -> None:
        assert check is False  # never wait on scancel while the user is stopping us
        self.cancelled = True


class FakeExecutor:
    def __init__(self) -> None:
        self.jobs: list[FakeJob] = []

    def update_parameters(self, **kwargs) -> None:
        pass

    def submit(self, fn, *args):
        # The first job has already ended when Ctrl-C comes; the others are queued or running.
        job = FakeJob(str(100 + len(self.jobs)), done=not self.jobs)
        self.jobs.append(job)
        return job


def test_ctrl_c_of_slurm_reproduce_cancels_its_unfinished_jobs(tmp_path, monkeypatch):
    executor = FakeExecutor()
    monkeypatch.setattr(reproduce_exec, "make_slurm_executor", lambda *a, **k: executor)

    def interrupt(seconds):
        raise KeyboardInterrupt

    monkeypatch.setattr(reproduce_exec.time, "sleep", interrupt)
    plan = tiny_plan(tmp_path / "runs")
    lines: list[str] = []
    with pytest.raises(KeyboardInterrupt):
        run_slurm(plan, cells_to_execute(plan), SlurmRequest(None, 0, 1, 5), Progress(plan, print_line=lines.append),
                  poll_s=0.0)
    assert [job.cancelled for job in executor.jobs] == [False, True, True]
    assert lines[-1].startswith("interrupted: cancelled 2 SLURM job(s): ") and "(job 101)" in lines[-1] \
        and "(job 102)" in lines[-1] and lines[-1].endswith("run reproduce again to resume them")
