"""Fit -> save -> score -> record. ``run`` trains a method and writes a run directory;
``rescore`` re-evaluates a run from its checkpoint without retraining."""
from __future__ import annotations

import dataclasses
import logging
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from segbench.benchmark import figures
from segbench.benchmark.config import to_jsonable
from segbench.benchmark.errors import UserError
from segbench.benchmark.records import (device_info, env_info, git_label, git_state, metric_records, new_run_dir,
                                        read_json, utc_now, write_json)
from segbench.datasets import DATASETS
from segbench.datasets.paths import resolve_data_root
from segbench.methods import METHODS
from segbench.methods.context import STATS, FitContext, StatsLog, final_checkpoint_dir, resolve_device
from segbench.protocols import PROTOCOLS

log = logging.getLogger("segbench")


@dataclass(frozen=True)
class RunRequest:
    method: str
    protocol: str
    preset: str = "paper"
    seed: int = 0
    overrides: Mapping[str, str] = field(default_factory=dict)  # --set key=value
    options: Mapping[str, str] = field(default_factory=dict)  # --option key=value (protocol)
    data_root: str | None = None
    out: str = "runs"
    limit: int | None = None  # cap on images per split (smoke runs); recorded in n_eval
    batch_size: int = 32
    progress: bool = True
    device: str = "auto"  # --device auto|cpu|cuda[:N]; the resolved device is recorded
    num_threads: int = 0  # --threads: torch CPU threads during fit (0 = the process default)


@dataclass
class Resolved:
    """Everything a run needs, resolved and validated before any work starts."""

    method_cls: type
    method_config: Any
    protocol: Any
    dataset: Any


def resolve(req: RunRequest) -> Resolved:
    method_cls = METHODS.get(req.method)
    protocol_cls = PROTOCOLS.get(req.protocol)
    spec = protocol_cls.spec
    missing = set(spec.needs) - set(method_cls.produces)
    if missing:
        raise UserError(f"protocol {spec.name!r} needs {sorted(missing)} but method {req.method!r} "
                        f"produces only {sorted(method_cls.produces)}")
    overrides = dict(req.overrides)
    fixed = method_cls.fixed_num_parts
    if fixed is not None:  # e.g. foreground-only methods: K is theirs, not the protocol's
        if "num_parts" in overrides and int(overrides["num_parts"]) != fixed:
            raise UserError(f"--set num_parts={overrides['num_parts']}: method {req.method!r} always has "
                            f"num_parts={fixed}")
        overrides["num_parts"] = fixed
    elif "num_parts" not in overrides:
        overrides["num_parts"] = spec.num_parts  # the protocol's K unless the user sets one
    config = method_cls.config_for(req.preset, overrides, dataset=spec.dataset)
    protocol = protocol_cls(req.options)
    dataset = DATASETS.get(spec.dataset)(root=resolve_data_root(req.data_root, spec.dataset),
                                          image_size=spec.image_size, **spec.dataset_options)
    return Resolved(method_cls, config, protocol, dataset)


def config_record(req: RunRequest, resolved: Resolved, method_config: Any, **extra: Any) -> dict[str, Any]:
    """The run's ``config.json``: everything that changes a number, and the request to rerun it."""
    return {"method": req.method, "preset": req.preset, "method_config": to_jsonable(method_config),
            "protocol": to_jsonable(dataclasses.asdict(resolved.protocol.spec)),
            "protocol_options": resolved.protocol.options, "dataset": resolved.dataset.describe(),
            "request": to_jsonable(dataclasses.asdict(req)), **{k: to_jsonable(v) for k, v in extra.items()},
            "argv": sys.argv}


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _setup_logging(run_dir: Path) -> logging.Handler:
    handler = logging.FileHandler(run_dir / "log.txt")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    return handler


def score(method: Any, resolved: Resolved, req: RunRequest, context: Mapping[str, Any],
          run_dir: Path | None = None, per_image_file: str | None = None) -> list[dict]:
    """The run's metric records. With ``run_dir``, the per-image values of the metrics that are
    means over images also go to ``run_dir / per_image_file`` (default ``scores_per_image.csv.gz``,
    columns ``split,image_id,metric,value``), written atomically."""
    from segbench.protocols.per_image import PER_IMAGE_FILE, write_per_image_scores

    spec = resolved.protocol.spec
    splits = {role: resolved.dataset.split(name, limit=req.limit)
              for role, name in spec.splits.items() if role != "fit"}
    scores = resolved.protocol.score(method, splits, batch_size=req.batch_size, progress=req.progress,
                                     device=resolve_device(req.device))
    hib = {m.name: m.higher_is_better for m in spec.metric_specs(resolved.protocol.options)}
    records = metric_records(scores.records, context=context, higher_is_better=hib)
    if run_dir is not None:
        write_per_image_scores(Path(run_dir) / (per_image_file or PER_IMAGE_FILE), scores.per_image)
    return records


def _context(req: RunRequest, resolved: Resolved, run_id: str, git: Mapping[str, Any], date: str) -> dict:
    spec = resolved.protocol.spec
    return {"method": req.method, "protocol": spec.name, "protocol_version": spec.version,
            "dataset": spec.dataset, "seed": req.seed, "run_id": run_id,
            "num_parts": int(getattr(resolved.method_config, "num_parts", 0)), "preset": req.preset,
            "git_hash": git_label(git), "date": date}


def run(req: RunRequest, resume_dir: Path | None = None) -> Path:
    """Fit, save, score and record. With ``resume_dir`` the run continues in that directory:
    ``fit`` is called again there and the method picks up its own training checkpoint."""
    resolved = resolve(req)
    device = resolve_device(req.device)  # before any folder is made: a bad --device leaves nothing
    spec = resolved.protocol.spec
    fit_split = resolved.dataset.split(spec.splits["fit"], limit=req.limit)
    run_dir = Path(resume_dir) if resume_dir else new_run_dir(Path(req.out), spec.name, req.method, req.seed)
    handler = _setup_logging(run_dir)
    try:
        stats = StatsLog(run_dir / STATS)  # the run's one stats log, handed to the method
        ctx = FitContext(seed=req.seed, device=device, progress=req.progress,
                         num_threads=req.num_threads, run_dir=run_dir, stats=stats)
        if not resume_dir:  # a resumed run keeps the config it was started with
            write_json(run_dir / "config.json", config_record(req, resolved, resolved.method_config,
                                                              fit_context=ctx.describe()))
        env = {**env_info(), "device": device_info(ctx.device)}
        write_json(run_dir / "env.json", env)
        if resume_dir:
            stats.write(phase="resumed", argv=sys.argv)
        log.info("%s %s: method=%s preset=%s protocol=%s seed=%d", "resume" if resume_dir else "run", run_dir,
                 req.method, req.preset, spec.name, req.seed)
        seed_everything(req.seed)
        method = resolved.method_cls(resolved.method_config)
        t0 = time.perf_counter()
        method.fit(fit_split.fit_images(), ctx)
        stats.write(phase="fit_done", fit_seconds=time.perf_counter() - t0, n_fit=len(fit_split))
        method.save(final_checkpoint_dir(run_dir))
        t0 = time.perf_counter()
        context = _context(req, resolved, run_dir.name, env["git"], utc_now().date().isoformat())
        records = score(method, resolved, req, context, run_dir=run_dir)
        stats.write(phase="eval_done", eval_seconds=time.perf_counter() - t0)
        write_json(run_dir / "metrics.json", records)
        test_split = resolved.dataset.split(spec.splits[spec.scored_role], limit=req.limit)
        figures.save_run_figures(method, test_split, run_dir / "figures", seed=req.seed)
        log.info("metrics: %s", {r["metric"]: r["value"] for r in records})
    finally:
        log.removeHandler(handler)
        handler.close()
    return run_dir


def recorded_request(run_dir: Path, data_root: str | None = None, progress: bool = True) -> RunRequest:
    """The request a run directory was started with (``--data-root`` may point elsewhere now)."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").exists():
        raise UserError(f"{run_dir} is not a run directory (no config.json)")
    recorded = read_json(run_dir / "config.json")["request"]
    return RunRequest(**{**recorded, "data_root": data_root if data_root is not None else recorded["data_root"],
                         "progress": progress})


def resume(run_dir: Path, data_root: str | None = None, progress: bool = True) -> Path:
    """Continue an interrupted run in place, with the settings it was started with."""
    return run(recorded_request(run_dir, data_root, progress), resume_dir=Path(run_dir))


def rescore(run_dir: Path, data_root: str | None = None, progress: bool = True) -> list[dict]:
    """Re-evaluate a finished run from ``checkpoints/final`` with the recorded settings (records to
    ``metrics_rescored.json``, per-image values to ``scores_per_image_rescored.csv.gz``)."""
    from segbench.protocols.per_image import PER_IMAGE_RESCORED_FILE

    run_dir = Path(run_dir)
    req = recorded_request(run_dir, data_root, progress)
    resolved = resolve(req)
    method = resolved.method_cls.load(final_checkpoint_dir(run_dir))
    original = {r["metric"]: r for r in read_json(run_dir / "metrics.json")} \
        if (run_dir / "metrics.json").exists() else {}
    first = next(iter(original.values()), {})
    context = _context(req, resolved, run_dir.name, git_state(), first.get("date", utc_now().date().isoformat()))
    context["git_hash"] = first.get("git_hash", context["git_hash"])
    records = score(method, resolved, req, context, run_dir=run_dir, per_image_file=PER_IMAGE_RESCORED_FILE)
    write_json(run_dir / "metrics_rescored.json", records)
    return records
