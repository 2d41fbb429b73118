"""``python -m benchmark bench ganseg``: where a GANSeg training iteration spends its time.

    python -m benchmark bench ganseg --preset paper --set batch_size=4 --steps 3 --threads 1
    python -m benchmark bench ganseg --preset quick --steps 16 --amp bf16 --stage all

Runs the real GAN loop (``methods.ganseg.train.train_gan``) on random images: ``--warmup``
untimed iterations, then ``--steps`` timed ones from step 0 with every phase of the step marked
(``methods.common.phases``): the D step's generator forward (fake batch), the D forwards (real,
fake), the gradient penalty, the D backward + Adam, the G step's generator forward, the G step's
D forward and losses (adversarial, concentration, area), the G backward + Adam. FLOPs are counted
per phase (``torch.utils.flop_counter``; off with ``--no-flops``) during the timed steps.

Steps differ (the penalty runs on every ``gp_every``-th D step, the regularisers on every
``reg_every``-th G step), so the table's per-step numbers are **schedule means**: each kind of
step (penalty yes/no x regularisers yes/no) is averaged over the timed steps of that kind and
weighted by its share of the real schedule. Timed steps from 0 cover every kind when
``--steps`` >= 3 with the paper's intervals (step 0: both; 1: neither; 2: regularisers only).
Times are wall seconds and process CPU seconds (all threads; the fair measure on a shared
machine). ``--stage segmenter|all`` adds the segmenter stage's s/it (``train_segmenter`` on
random pairs at the config's segmenter settings).

One JSON object per call is appended to ``--jsonl`` (default ``runs/bench.jsonl``) with the
config, torch version, device, threads and ``--label``, for side-by-side comparisons.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import platform
import resource
import sys
import time
from pathlib import Path
from typing import Any

PHASES = ("d_step_g_forward", "d_step_d_forward", "d_step_penalty", "d_step_backward_adam",
          "g_step_g_forward", "g_step_d_forward_losses", "g_step_backward_adam")
SEED = 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("method", choices=["ganseg"], help="the method whose training step is measured")
    parser.add_argument("--preset", default="paper")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--steps", type=int, default=3, help="timed iterations from step 0 (default 3)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed iterations first (default 1)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    parser.add_argument("--device", default="cpu", metavar="auto|cpu|cuda[:N]")
    parser.add_argument("--amp", default=None, choices=["off", "bf16", "fp16"], help="default: the config's")
    parser.add_argument("--stage", default="gan", choices=["gan", "segmenter", "all"])
    parser.add_argument("--no-flops", action="store_true", help="do not count FLOPs (pure timing)")
    parser.add_argument("--jsonl", default="runs/bench.jsonl", help="append the result here ('' = do not)")
    parser.add_argument("--label", default="", help="a name for this measurement in the JSONL")


def _config(args: argparse.Namespace) -> Any:
    from segbench.benchmark.config import parse_set_args, resolve_config
    from segbench.methods.ganseg.config import PRESETS, GANSegConfig

    overrides = parse_set_args(args.set)
    if args.amp is not None:
        overrides["amp"] = args.amp
    config = resolve_config(GANSegConfig, PRESETS, args.preset, overrides)
    return dataclasses.replace(config, sample_every=0, checkpoint_every=0)


def step_kinds(config: Any, steps: range) -> dict[int, tuple[bool, bool]]:
    """Step -> (penalty, regularisers) for the GAN loop's schedule."""
    reg = not config.generator.no_points
    return {i: (i % config.gp_every == 0, reg and i % config.reg_every == 0) for i in steps}


def schedule_means(config: Any, per_step: dict[int, dict[str, dict[str, float]]]) -> dict[str, Any]:
    """Per phase and in total: the mean per iteration of the real schedule (see the docstring)."""
    period = math.lcm(config.gp_every, config.reg_every)
    share: dict[tuple[bool, bool], float] = {}
    for kind in step_kinds(config, range(period)).values():
        share[kind] = share.get(kind, 0.0) + 1.0 / period
    timed = step_kinds(config, range(len(per_step)))
    missing = [k for k in share if k not in set(timed.values())]
    if missing:
        return {"complete": False, "missing_kinds": [{"penalty": p, "regularisers": r} for p, r in missing]}
    out: dict[str, Any] = {"complete": True, "phases": {}}
    for phase in PHASES:
        row = {}
        for key in ("seconds", "cpu_seconds", "flops"):
            total = 0.0
            for kind, weight in share.items():
                vals = [per_step[i].get(phase, {}).get(key, 0.0) for i, k in timed.items() if k == kind]
                if any(v is None for v in vals):
                    total = None
                    break
                total += weight * sum(vals) / len(vals)
            row[key] = total
        out["phases"][phase] = row
    for key in ("seconds", "cpu_seconds", "flops"):
        vals = [r[key] for r in out["phases"].values()]
        out[key] = None if any(v is None for v in vals) else sum(vals)
    return out


def bench_gan(config: Any, args: argparse.Namespace, device: Any) -> dict[str, Any]:
    from segbench.methods.common.phases import PhaseProfiler
    from segbench.methods.context import FitContext
    from segbench.methods.ganseg.throughput import RandomImages
    from segbench.methods.ganseg.train import train_gan

    images = RandomImages(max(4 * config.batch_size, 64), config.image_size)
    if args.warmup:
        train_gan(dataclasses.replace(config, steps=args.warmup, log_every=args.warmup), images,
                  FitContext(seed=SEED, device=device, progress=False))
    profiler = PhaseProfiler(device, count_flops=not args.no_flops)
    ctx = FitContext(seed=SEED, device=device, progress=False, profiler=profiler)
    wall0, cpu0 = time.perf_counter(), time.process_time()
    with profiler.active():
        _, info = train_gan(dataclasses.replace(config, steps=args.steps, log_every=args.steps), images, ctx)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    per_step = profiler.by_step()
    return {"timed_steps": args.steps, "wall_s_per_it_timed": wall / args.steps, "cpu_s_per_it_timed": cpu / args.steps,
            "schedule": schedule_means(config, per_step),
            "per_step_seconds": {i: sum(p["seconds"] for p in ph.values()) for i, ph in per_step.items()},
            "generator_params": info["generator_params"], "discriminator_params": info["discriminator_params"],
            "flops_counted": not args.no_flops}


def bench_segmenter(config: Any, args: argparse.Namespace, device: Any) -> dict[str, Any]:
    from segbench.methods.common.segmenter import train_segmenter
    from segbench.methods.ganseg.throughput import random_pair_source

    seg, size, k = dataclasses.replace(config.segmenter, checkpoint_every=0), config.image_size, config.num_parts + 1
    source = random_pair_source(k, size)
    if args.warmup:
        train_segmenter(dataclasses.replace(seg, steps=args.warmup, log_every=args.warmup), source, seed=SEED,
                        device=device, progress=False, amp=config.amp)
    cpu0 = time.process_time()
    _, info = train_segmenter(dataclasses.replace(seg, steps=args.steps, log_every=args.steps), source, seed=SEED,
                              device=device, progress=False, amp=config.amp)
    return {"arch": seg.arch, "batch_size": seg.batch_size, "image_size": seg.image_size, "steps": args.steps,
            "wall_s_per_it": info["train_seconds"] / args.steps,
            "cpu_s_per_it": (time.process_time() - cpu0) / args.steps}


def _fmt(value: Any, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def format_report(report: dict[str, Any]) -> str:
    lines = [f"bench {report['method']} preset {report['preset']} {report['overrides'] or ''} amp {report['amp']} "
             f"device {report['device']} threads {report['threads']} torch {report['torch']}"]
    gan = report.get("gan")
    if gan:
        sched = gan["schedule"]
        lines.append(f"GAN: G {gan['generator_params']:,} / D {gan['discriminator_params']:,} params, "
                     f"{gan['timed_steps']} timed steps: {gan['wall_s_per_it_timed']:.3f} s/it wall, "
                     f"{gan['cpu_s_per_it_timed']:.3f} CPU s/it (those steps)")
        if not sched["complete"]:
            lines.append(f"  schedule means need more timed steps (missing kinds: {sched['missing_kinds']})")
        else:
            lines.append(f"  {'phase (mean per iteration of the schedule)':<44}{'s':>9}{'CPU s':>9}{'GFLOP':>10}{'share':>7}")
            total = sched["seconds"] or 1e-12
            for name, row in sched["phases"].items():
                gflop = None if row["flops"] is None else row["flops"] / 1e9
                lines.append(f"  {name:<44}{_fmt(row['seconds']):>9}{_fmt(row['cpu_seconds']):>9}"
                             f"{_fmt(gflop, 1):>10}{row['seconds'] / total:>7.1%}")
            gflop = None if sched["flops"] is None else sched["flops"] / 1e9
            lines.append(f"  {'total (s/it, CPU s/it, GFLOP/step)':<44}{_fmt(sched['seconds']):>9}"
                         f"{_fmt(sched['cpu_seconds']):>9}{_fmt(gflop, 1):>10}")
    seg = report.get("segmenter")
    if seg:
        lines.append(f"segmenter: {seg['arch']} {seg['image_size']}px batch {seg['batch_size']}, {seg['steps']} steps: "
                     f"{seg['wall_s_per_it']:.3f} s/it wall, {seg['cpu_s_per_it']:.3f} CPU s/it")
    lines.append(f"peak RSS {report['peak_rss_mb']:.0f} MiB" +
                 (f", peak CUDA {report['peak_cuda_mb']:.0f} MiB" if report.get("peak_cuda_mb") else ""))
    return "\n".join(lines)


def run_bench(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from segbench.benchmark.config import to_jsonable
    from segbench.benchmark.errors import UserError
    from segbench.benchmark.records import env_info, git_label, git_state
    from segbench.methods.context import resolve_device

    if args.steps < 1 or args.warmup < 0 or args.threads < 0:
        raise UserError("bench: --steps must be >= 1, --warmup and --threads >= 0")
    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    config = _config(args)
    report: dict[str, Any] = {"method": args.method, "preset": args.preset, "overrides": args.set, "amp": config.amp,
                              "device": str(device), "threads": torch.get_num_threads(), "torch": torch.__version__,
                              "cpu": platform.processor() or platform.machine(), "label": args.label,
                              "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
                              # what else changes a number: the code and the whole resolved config
                              "git_hash": git_label(git_state()), "env": env_info(), "config": to_jsonable(config)}
    if args.stage in ("gan", "all"):
        report["gan"] = bench_gan(config, args, device)
    if args.stage in ("segmenter", "all"):
        report["segmenter"] = bench_segmenter(config, args, device)
    report["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if device.type == "cuda":
        report["peak_cuda_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return report


def main(args: argparse.Namespace) -> int:
    report = run_bench(args)
    print(format_report(report))
    if args.jsonl:
        path = Path(args.jsonl)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as fh:  # append-only: one whole line per measurement
            fh.write(json.dumps(report, default=str) + "\n")
        print(f"appended to {path}")
    sys.stdout.flush()
    return 0
