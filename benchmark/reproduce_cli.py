"""Regenerate a paper's table with one command: plan its runs, reuse / resume / run them, render it.

``python -m benchmark reproduce TABLE`` (TABLE: a manifest name in results/paper/tables/ or a
.toml path). Only the standard library is imported here, so building the CLI parser stays cheap;
planning imports the registries (and torch) when the command runs.

Exit codes: 0 when every cell is done or cannot run here (missing data, cited only: listed with
the reason); 1 when a cell failed (each listed with its log and its one-line error; the others
still ran and the table is still rendered); 2 a user error (bad flag, bad manifest).
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from segbench.benchmark.errors import UserError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("table", help="a table manifest: a name in results/paper/tables/ (e.g. ganseg_tab1) or a .toml path")
    p.add_argument("--preset", default=None, help="method preset for every row (default: the manifest's)")
    p.add_argument("--seeds", type=int, nargs="+", default=None, metavar="SEED",
                   help="seeds of every cell (default: the manifest's)")
    p.add_argument("--limit", type=int, default=None, help="at most this many images per split (smoke runs)")
    p.add_argument("--jobs", type=int, default=1,
                   help="local runs at a time (default 1); each gets cores // jobs threads")
    p.add_argument("--gpus", default=None, metavar="IDS|none",
                   help="local: the GPU ids the workers are pinned to, worker i on GPU i mod n through "
                        "CUDA_VISIBLE_DEVICES (default: every visible GPU when there are two or more and --device "
                        "is unset, auto or cuda); none: no pinning")
    p.add_argument("--executor", choices=("local", "slurm"), default="local",
                   help="local: subprocesses on this machine; slurm: one submitit job per cell")
    p.add_argument("--slurm-partition", default=None, metavar="P")
    p.add_argument("--slurm-gpus-per-task", type=int, default=1, metavar="G", help="GPUs per cell job (default 1)")
    p.add_argument("--slurm-cpus-per-task", type=int, default=8, metavar="C",
                   help="CPUs per cell job (default 8); the run's --threads")
    p.add_argument("--slurm-time", type=int, default=24 * 60, metavar="M", help="time limit per job, minutes")
    p.add_argument("--submitit-cluster", choices=("slurm", "local", "debug"), default="slurm",
                   help="submitit's executor behind --executor slurm: slurm (default), or local/debug to run the "
                        "jobs on this machine through submitit")
    p.add_argument("--dry-run", action="store_true",
                   help="list every cell, its status and its exact run command; run and write nothing")
    p.add_argument("--status", action="store_true",
                   help="show how many cells are done / running / failed, with their run folders; run nothing")
    p.add_argument("--out", default="runs", help="where run folders go (default runs)")
    p.add_argument("--data-root", default=None)
    p.add_argument("--device", default=None, metavar="auto|cpu|cuda[:N]",
                   help="--device of every cell's run (default: the run's default, auto)")
    p.add_argument("--tables-out", default=None,
                   help="where <TABLE>.md/.csv/.tex go (default: the project's results/tables/)")
    p.add_argument("--progress-every", type=float, default=60.0, metavar="S",
                   help="seconds between summaries of the running cells (default 60)")


def _check_flags(args: argparse.Namespace) -> None:
    if args.jobs < 1:
        raise UserError(f"--jobs {args.jobs}: must be an integer >= 1")
    if args.seeds is not None and (any(s < 0 for s in args.seeds) or len(set(args.seeds)) != len(args.seeds)):
        raise UserError(f"--seeds {' '.join(map(str, args.seeds))}: distinct integers >= 0")
    if args.limit is not None and args.limit < 1:
        raise UserError(f"--limit {args.limit}: must be an integer >= 1 (images per split)")
    if args.slurm_gpus_per_task < 0 or args.slurm_cpus_per_task < 1 or args.slurm_time < 1:
        raise UserError("--slurm-gpus-per-task >= 0, --slurm-cpus-per-task >= 1 and --slurm-time >= 1 (minutes)")
    if args.gpus is not None and args.executor == "slurm":
        raise UserError(f"--gpus {args.gpus} is for --executor local; on SLURM give --slurm-gpus-per-task")
    if args.dry_run and args.status:
        raise UserError("--dry-run and --status: give one")
    if args.progress_every <= 0:
        raise UserError(f"--progress-every {args.progress_every}: must be > 0 seconds")


def _check_preset(manifest, preset: str) -> None:
    """A preset no row's method has is refused before anything runs (one line naming the method)."""
    from segbench.methods import METHODS

    for row in manifest.rows:
        if row.method is None:
            continue
        presets = getattr(METHODS.get(row.method), "PRESETS", None)
        if presets is not None and preset not in presets:
            raise UserError(f"--preset {preset}: method {row.method!r} (row {row.label!r}) has presets "
                            f"{', '.join(presets)}")


def _slurm_request(args: argparse.Namespace):
    from segbench.benchmark.reproduce_exec import SlurmRequest

    return SlurmRequest(partition=args.slurm_partition, gpus_per_task=args.slurm_gpus_per_task,
                        cpus_per_task=args.slurm_cpus_per_task, time_min=args.slurm_time)


def count_statuses(statuses: list[str]) -> str:
    from segbench.benchmark.reproduce import DONE, MISSING_DATA, RESUME, RUN, RUNNING

    labels = {DONE: "done", RUNNING: "running", RESUME: "to resume", RUN: "to run", MISSING_DATA: "missing data",
              "failed": "failed"}
    return ", ".join(f"{statuses.count(s)} {label}" for s, label in labels.items() if statuses.count(s)) or "none"


def print_plan(plan, threads: int, file=None) -> None:
    """``--dry-run``: every cell, its status and its exact command (for a done cell, the command that
    would make it); then the cited and not-meaningful cells with their reasons."""
    from segbench.benchmark.reproduce import DONE, MISSING_DATA, RESUME, RUNNING, cell_args, show_command

    file = file or sys.stdout
    m = plan.manifest
    print(f"table {m.id}: {m.title}", file=file)
    print(f"preset {plan.preset}, seeds {' '.join(map(str, plan.seeds))}"
          + (f", limit {plan.limit}" if plan.limit else "") + f", runs in {plan.out}", file=file)
    for status in plan.cells:
        cell = status.cell
        if status.status == DONE:
            detail = f"done: {status.folder}"
        elif status.status == RUNNING:
            detail = f"running: {status.folder}"
        elif status.status == RESUME:
            detail = f"interrupted, resume: {status.folder}"
        elif status.status == MISSING_DATA:
            detail = f"missing data: {status.reason}"
        else:
            detail = "to run" + (f" (will fail: {status.reason})" if status.reason else "")
        print(f"  {cell.id}  [{detail}]", file=file)
        print(f"      {show_command(cell_args(status, plan.out, threads, plan.data_root, plan.device))}", file=file)
    shown = set()
    for ref in plan.table_cells:
        if ref.cell_ids:
            continue
        row = next(r for r in m.rows if r.id == ref.row_id)
        column = next(c for c in m.columns if c.id == ref.column_id)
        column_name = " ".join(p for p in (column.group, column.label) if p)
        where = row.label if row.cited else column_name if column.cited else f"{row.label} x {column_name}"
        reason = ref.reason if row.cited or column.cited else f"not meaningful: {ref.reason}"
        if (where, reason) not in shown:
            shown.add((where, reason))
            print(f"  - {where}: {reason}", file=file)
    print(f"{len(plan.cells)} run cells: {count_statuses([c.status for c in plan.cells])}", file=file)


def _print_dry_run(plan, args: argparse.Namespace) -> None:
    from segbench.benchmark.reproduce_exec import cells_to_execute, describe_workers, local_gpus, thread_budget

    if args.executor == "slurm":
        request = _slurm_request(args)
        print_plan(plan, request.cpus_per_task)
        todo = cells_to_execute(plan)
        print(f"slurm: {len(todo)} job(s), one per cell to run, each submitted (submitit, cluster "
              f"{args.submitit_cluster}) with:")
        for line in request.sbatch_lines("segbench-<cell id>"):
            print(f"  {line}")
        print(f"  submitit logs in {plan.state_dir() / 'submitit'}")
        return
    gpus = local_gpus(args.gpus, args.device)
    print_plan(plan, thread_budget(args.jobs)[1])
    print(describe_workers(args.jobs, gpus))


def _print_status(plan) -> None:
    """Cells done / running / failed / to run, from the run folders and the last session's state."""
    from segbench.benchmark.reproduce import DONE, RUNNING
    from segbench.benchmark.reproduce_exec import FAILED, pid_alive, read_state

    state = read_state(plan)
    session_alive = pid_alive(state.get("pid"))
    recorded = state.get("cells") if isinstance(state.get("cells"), dict) else {}
    lines, statuses = [], []
    for status in plan.cells:
        entry = recorded.get(status.cell.id) or {}
        kind, detail = status.status, str(status.folder or status.reason or "")
        if kind not in (DONE, RUNNING):
            if entry.get("status") == FAILED:
                kind, detail = FAILED, f"{entry.get('error', '')} (log {entry.get('log', '')})"
            elif entry.get("status") == RUNNING and session_alive:
                kind, detail = RUNNING, f"starting (log {entry.get('log', '')})"
        statuses.append(kind)
        lines.append(f"  {status.cell.id}  [{kind}] {detail}".rstrip())
    done, running, failed = statuses.count(DONE), statuses.count(RUNNING), statuses.count(FAILED)
    print(f"table {plan.manifest.id}: {done}/{len(statuses)} done, {running} running, {failed} failed"
          + ("" if not recorded else f" (last session pid {state.get('pid')}: "
                                      f"{'running' if session_alive else 'ended'})"))
    print("\n".join(lines))


def main(args: argparse.Namespace) -> int:
    _check_flags(args)
    from segbench.benchmark.errors import check_out_folder
    from segbench.benchmark.records import REPO_ROOT
    from segbench.benchmark.reproduce import plan_table
    from segbench.benchmark.table_manifest import load_manifest

    manifest = load_manifest(args.table)
    preset = args.preset or manifest.preset
    _check_preset(manifest, preset)
    plan_args = dict(preset=preset, seeds=tuple(args.seeds) if args.seeds else None, limit=args.limit, out=args.out,
                     data_root=args.data_root)
    plan = dataclasses.replace(plan_table(manifest, **plan_args), device=args.device)
    if args.status:
        _print_status(plan)
        return 0
    if args.dry_run:
        _print_dry_run(plan, args)
        return 0
    check_out_folder(args.out)
    tables_out = Path(args.tables_out) if args.tables_out else REPO_ROOT / "results" / "tables"
    if tables_out.exists() and not tables_out.is_dir():
        raise UserError(f"--tables-out {tables_out}: not a folder")
    from segbench.benchmark.reproduce_exec import (FAILED, Progress, cells_to_execute, describe_workers, local_gpus,
                                                   run_local, run_slurm)

    gpus = local_gpus(args.gpus, args.device) if args.executor == "local" else []

    todo = cells_to_execute(plan)
    print(f"table {manifest.id}: {len(plan.cells)} run cells: {count_statuses([c.status for c in plan.cells])}")
    progress = Progress(plan)
    progress.write()
    if todo and args.executor == "slurm":
        outcomes = run_slurm(plan, todo, _slurm_request(args), progress, cluster=args.submitit_cluster,
                             progress_every=args.progress_every)
    elif todo:
        print(describe_workers(args.jobs, gpus))
        outcomes = run_local(plan, todo, args.jobs, progress, progress_every=args.progress_every, gpus=gpus)
    else:
        outcomes = []
    failed = {o.cell_id: o for o in outcomes if o.status == FAILED}
    plan = dataclasses.replace(plan_table(manifest, **plan_args), device=args.device)  # what the run folders hold now
    from segbench.benchmark.table_render import collect_cells, render_all, write_rendered

    values = collect_cells(plan, {cid: o.error for cid, o in failed.items()})
    for path in write_rendered(manifest.id, render_all(plan, values), tables_out):
        print(f"wrote {path}")
    statuses = [FAILED if c.cell.id in failed else c.status for c in plan.cells]
    print(f"table {manifest.id}: {len(plan.cells)} run cells: {count_statuses(statuses)}")
    if failed:
        print(f"error: {len(failed)} of {len(plan.cells)} cells failed:", file=sys.stderr)
        for cid, outcome in sorted(failed.items()):
            print(f"  {cid}: {outcome.error} (log {outcome.log})", file=sys.stderr)
        return 1
    return 0
