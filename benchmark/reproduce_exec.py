"""Running a table's cells: a local pool of ``--jobs`` subprocesses, or one SLURM job per cell
through submitit; progress lines and a state file that ``reproduce TABLE --status`` reads.

Every cell is the same thing on either executor: :func:`run_cell` starts ``python -m segbench run
...`` (or ``run --resume DIR``) as a subprocess with its output appended to the cell's log, and
returns the exit code, the run folder it printed and the one-line error. A failed cell is recorded
and never stops the others. Thread budget: locally, ``--jobs`` workers of ``cores // jobs``
threads each (``--threads`` and the OpenMP/MKL variables), so the total is the core count; on
SLURM, ``--threads`` = the CPUs requested per task.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import queue
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from segbench.benchmark.errors import UserError
from segbench.benchmark.reproduce import (CLI, DONE, RESUME, RUN, RUNNING, CellStatus, TablePlan, cell_args,
                                          show_command)

FAILED = "failed"
STATE_FILE = "state.json"
_RUN_DIR_LINE = re.compile(r"^run directory: (.+)$", re.MULTILINE)


@dataclass(frozen=True)
class CellOutcome:
    cell_id: str
    status: str  # DONE or FAILED
    run_dir: str  # "" when the run made no folder
    log: str
    error: str  # one line; "" when done


@dataclass(frozen=True)
class SlurmRequest:
    partition: str | None
    gpus_per_task: int
    cpus_per_task: int
    time_min: int

    def sbatch_lines(self, job_name: str) -> list[str]:
        """The ``#SBATCH`` options a cell's job is submitted with (what ``--dry-run`` prints)."""
        lines = [f"#SBATCH --job-name={job_name}", "#SBATCH --nodes=1", "#SBATCH --ntasks-per-node=1",
                 f"#SBATCH --cpus-per-task={self.cpus_per_task}", f"#SBATCH --time={self.time_min}"]
        if self.gpus_per_task:
            lines.append(f"#SBATCH --gpus-per-task={self.gpus_per_task}")
        if self.partition:
            lines.append(f"#SBATCH --partition={self.partition}")
        return lines

    def submitit_parameters(self, job_name: str) -> dict[str, Any]:
        params: dict[str, Any] = {"name": job_name, "timeout_min": self.time_min, "nodes": 1, "tasks_per_node": 1,
                                  "cpus_per_task": self.cpus_per_task}
        if self.gpus_per_task:
            params["slurm_gpus_per_task"] = self.gpus_per_task
        if self.partition:
            params["slurm_partition"] = self.partition
        return params


def available_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def thread_budget(jobs: int, cores: int | None = None) -> tuple[int, int]:
    """(workers, threads per worker): at most one worker per core, ``cores // workers`` threads
    each, so the runs together use the cores without oversubscribing them."""
    cores = cores or available_cores()
    workers = max(1, min(jobs, cores))
    return workers, max(1, cores // workers)


def local_gpus(spec: str | None, device: str | None) -> list[str]:
    """The GPU ids the local workers are pinned to (``--gpus``). ``spec`` None (automatic): every GPU
    this process sees when there are two or more and the cells may use one (``--device`` unset,
    ``auto`` or ``cuda``), as ``CUDA_VISIBLE_DEVICES`` names them when it is set; else none, and the
    runs inherit the environment unchanged. ``"none"``: no pinning. ``"0,2"``: those ids."""
    device_chosen = device is not None and (device == "cpu" or device.startswith("cuda:"))
    if spec is not None:
        if spec.strip().lower() == "none":
            return []
        ids = [part.strip() for part in spec.split(",")]
        if not all(ids) or len(set(ids)) != len(ids):
            raise UserError(f"--gpus {spec}: a comma-separated list of distinct GPU ids (e.g. 0,1), or none")
        if device_chosen:
            raise UserError(f"--gpus {spec} with --device {device}: a pinned worker sees its one GPU as cuda:0; "
                            f"give --device cuda (or auto), or --gpus none")
        return ids
    if device_chosen:
        return []
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count < 2:
        return []
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    ids = [part.strip() for part in visible.split(",") if part.strip()] if visible else []
    return (ids or [str(i) for i in range(count)])[:count]


def describe_workers(jobs: int, gpus: list[str]) -> str:
    """``local: 2 worker(s) x 4 thread(s)``, with the GPU of each worker slot when pinned."""
    workers, threads = thread_budget(jobs)
    text = f"local: {workers} worker(s) x {threads} thread(s)"
    if workers < jobs:
        text += f" (--jobs {jobs} capped at the {workers} cores)"
    if gpus:
        text += ", CUDA_VISIBLE_DEVICES per worker: " + ", ".join(gpus[i % len(gpus)] for i in range(workers))
    return text


# ---------------------------------------------------------------- one cell


def _error_line(text: str, returncode: int) -> str:
    """The one-line reason of a failed run from its output: the CLI's ``error: ...`` line, the last
    line of a traceback, or the signal that stopped it."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith(("error: ", "interrupted", "terminated"))]
    if errors:
        return errors[-1].removeprefix("error: ")
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"killed by {name}"
    return lines[-1] if lines else f"exit code {returncode}, no output"


def run_cell(args: list[str], log_path: str, cwd: str, threads: int,
             extra_env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """Run ``python -m segbench <args>`` (this interpreter) with its output appended to
    ``log_path``; returns (exit code, run folder printed or "", one-line error or ""). Module
    level, so that submitit can pickle it by reference into a SLURM job. ``extra_env``: e.g. the
    ``CUDA_VISIBLE_DEVICES`` of a local worker's GPU (written in the log's header line)."""
    log = Path(log_path)
    log.parent.mkdir(parents=True, exist_ok=True)
    extra_env = dict(extra_env or {})
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), **extra_env}
    stamp = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    shown_env = "".join(f"{k}={shlex.quote(v)} " for k, v in sorted(extra_env.items()))
    with open(log, "a", encoding="utf-8") as fh:
        fh.write(f"==== {stamp} {shown_env}{shlex.join([*CLI, *args])}\n")
        fh.flush()
        start = fh.tell()
        proc = subprocess.run([sys.executable, "-m", "segbench", *args], cwd=cwd, env=env, stdout=fh,
                              stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    with open(log, encoding="utf-8", errors="replace") as fh:
        fh.seek(start)
        output = fh.read()
    found = _RUN_DIR_LINE.findall(output)
    if proc.returncode == 0:
        return 0, found[-1].strip() if found else "", ""
    return proc.returncode, "", _error_line(output, proc.returncode)


# ---------------------------------------------------------------- progress and state


class Progress:
    """Counts, progress lines and ``state.json`` (written atomically on every change) for one table."""

    def __init__(self, plan: TablePlan, print_line: Callable[[str], None] = print) -> None:
        self.plan = plan
        self.print_line = print_line
        self.lock = threading.Lock()
        self.state: dict[str, dict[str, Any]] = {}
        for status in plan.cells:
            entry = {"status": status.status, "run_dir": str(status.folder or ""), "log": "", "error": status.reason}
            self.state[status.cell.id] = entry
        self.total = len(plan.cells)

    def log_path(self, cell_id: str) -> Path:
        return self.plan.state_dir() / "logs" / f"{cell_id}.log"

    def _counts(self) -> str:
        statuses = [e["status"] for e in self.state.values()]
        return (f"[{statuses.count(DONE)}/{self.total} done, {statuses.count(RUNNING)} running, "
                f"{statuses.count(FAILED)} failed]")

    def write(self) -> None:
        from segbench.methods.context import write_json_atomic

        write_json_atomic(self.plan.state_dir() / STATE_FILE,
                          {"table": self.plan.manifest.id, "pid": os.getpid(), "cells": self.state})

    def started(self, cell_id: str, command: str) -> None:
        with self.lock:
            resumed = self.state[cell_id]["status"] == RESUME
            self.state[cell_id].update(status=RUNNING, log=str(self.log_path(cell_id)), error="", command=command)
            self.write()
            what = f"resuming {cell_id} in {self.state[cell_id]['run_dir']}" if resumed else f"started {cell_id}"
            self.print_line(f"{self._counts()} {what} (log {self.log_path(cell_id)})")

    def finished(self, outcome: CellOutcome) -> None:
        with self.lock:
            entry = self.state[outcome.cell_id]
            entry.update(status=outcome.status, log=outcome.log, error=outcome.error,
                         run_dir=outcome.run_dir or entry["run_dir"])
            self.write()
            if outcome.status == DONE:
                self.print_line(f"{self._counts()} done {outcome.cell_id}: {outcome.run_dir}")
            else:
                self.print_line(f"{self._counts()} FAILED {outcome.cell_id}: {outcome.error} (log {outcome.log})")

    def running_summary(self) -> None:
        """The cells running now and their run folders (found by their lock, once they have one)."""
        from segbench.benchmark.reproduce import folder_locked, scan_folders

        with self.lock:
            running = [self.plan.cell(cid).cell for cid, e in self.state.items() if e["status"] == RUNNING]
            found = scan_folders(Path(self.plan.out), running)
            self.print_line(f"{self._counts()} running:")
            for cell in running:
                locked = [str(p) for p in found.get(cell.match_key(), []) if folder_locked(p)]
                self.print_line(f"    {cell.id}: {', '.join(locked) or 'starting'}")


def read_state(plan: TablePlan) -> dict[str, Any]:
    path = plan.state_dir() / STATE_FILE
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
        return state if isinstance(state, dict) else {}
    except (OSError, ValueError):
        return {}


def pid_alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


# ---------------------------------------------------------------- executors


def _outcome(cell_id: str, log: Path, result: tuple[int, str, str]) -> CellOutcome:
    code, run_dir, error = result
    return CellOutcome(cell_id, DONE if code == 0 else FAILED, run_dir, str(log), error)


def run_local(plan: TablePlan, todo: list[CellStatus], jobs: int, progress: Progress,
              progress_every: float = 60.0, gpus: list[str] = ()) -> list[CellOutcome]:
    """``--executor local``: ``jobs`` workers, each running one cell's subprocess at a time. With
    ``gpus``, worker slot i runs its cells with ``CUDA_VISIBLE_DEVICES=gpus[i % len(gpus)]``, so
    ``--jobs 4`` on a 4-GPU workstation puts one cell on each GPU instead of all on the first."""
    workers, threads = thread_budget(jobs)
    cwd = os.getcwd()
    slots: queue.SimpleQueue[int] = queue.SimpleQueue()
    for slot in range(workers):
        slots.put(slot)

    def work(status: CellStatus) -> CellOutcome:
        cid, log = status.cell.id, progress.log_path(status.cell.id)
        args = cell_args(status, plan.out, threads, plan.data_root, plan.device)
        slot = slots.get()  # a free worker slot: at most `workers` cells run, each on its slot's GPU
        try:
            env = {"CUDA_VISIBLE_DEVICES": gpus[slot % len(gpus)]} if gpus else {}
            progress.started(cid, show_command(args))
            try:
                result = run_cell(args, str(log), cwd, threads, env)
            except OSError as exc:  # the interpreter could not be started, the log not written
                result = (1, "", f"could not start the run: {exc}")
        finally:
            slots.put(slot)
        outcome = _outcome(cid, log, result)
        progress.finished(outcome)
        return outcome

    outcomes = []
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="reproduce")
    try:
        pending = {pool.submit(work, status) for status in todo}
        while pending:
            done, pending = wait(pending, timeout=progress_every, return_when=FIRST_COMPLETED)
            outcomes += [f.result() for f in done]
            if not done:
                progress.running_summary()
    finally:
        # Ctrl-C: the runs started get SIGINT from the terminal too and record their interruption
        # (a later reproduce resumes them); the queued ones are not started.
        pool.shutdown(wait=True, cancel_futures=True)
    return outcomes


def make_slurm_executor(folder: Path, request: SlurmRequest, cluster: str | None):
    try:
        import submitit
    except ImportError:
        raise UserError("--executor slurm needs submitit: pip install 'segbench[slurm]' (or pip install submitit)") \
            from None
    return submitit.AutoExecutor(folder=str(folder), cluster=cluster)


def run_slurm(plan: TablePlan, todo: list[CellStatus], request: SlurmRequest, progress: Progress, *,
              cluster: str | None = None, poll_s: float = 1.0, progress_every: float = 60.0) -> list[CellOutcome]:
    """``--executor slurm``: one submitit job per cell (``cluster="local"``: submitit's local
    executor, as the tests use), polled until every job has ended."""
    executor = make_slurm_executor(plan.state_dir() / "submitit", request, cluster)
    cwd, jobs = os.getcwd(), []
    try:
        for status in todo:
            cid, log = status.cell.id, progress.log_path(status.cell.id)
            args = cell_args(status, plan.out, request.cpus_per_task, plan.data_root, plan.device)
            executor.update_parameters(**request.submitit_parameters(f"segbench-{cid}"))
            progress.started(cid, show_command(args))
            jobs.append((cid, log, executor.submit(run_cell, args, str(log), cwd, request.cpus_per_task)))
        return _wait_for_jobs(jobs, progress, poll_s, progress_every)
    except KeyboardInterrupt:
        _cancel_jobs(jobs, progress)
        raise


def _cancel_jobs(jobs: list, progress: Progress) -> None:
    """Ctrl-C of ``reproduce --executor slurm``: the jobs it submitted that have not ended are
    cancelled (``scancel``; a running cell's run gets SIGTERM, records the interruption and keeps
    its snapshot), so none keeps running unwatched; a later ``reproduce`` resumes them."""
    cancelled = []
    for cid, _log, job in jobs:
        try:
            if not job.done():
                job.cancel(check=False)
                cancelled.append(f"{cid} (job {job.job_id})")
        except Exception as exc:  # scancel missing or refused: say so, cancel the others
            progress.print_line(f"could not cancel {cid} (job {getattr(job, 'job_id', '?')}): {exc}")
    if cancelled:
        progress.print_line(f"interrupted: cancelled {len(cancelled)} SLURM job(s): {', '.join(cancelled)}; "
                            "run reproduce again to resume them")


def _wait_for_jobs(jobs: list, progress: Progress, poll_s: float, progress_every: float) -> list[CellOutcome]:
    """Poll the submitted jobs until every one has ended; each outcome is recorded as it ends. The
    list is updated in place, so that on Ctrl-C it holds the jobs still running."""
    outcomes, last_summary = [], time.monotonic()
    while jobs:
        still = []
        for cid, log, job in jobs:
            if not job.done():
                still.append((cid, log, job))
                continue
            try:
                result = job.result()
            except Exception as exc:  # the job itself failed (time limit, node failure, cancelled)
                lines = [line for line in str(exc).splitlines() if line.strip()]
                result = (1, "", f"job {job.job_id} failed: {lines[-1] if lines else type(exc).__name__}")
            outcome = _outcome(cid, log, result)
            progress.finished(outcome)
            outcomes.append(outcome)
        jobs[:] = still
        if jobs:
            if time.monotonic() - last_summary >= progress_every:
                progress.running_summary()
                last_summary = time.monotonic()
            time.sleep(poll_s)
    return outcomes


def cells_to_execute(plan: TablePlan) -> list[CellStatus]:
    return [c for c in plan.cells if c.status in (RUN, RESUME)]
