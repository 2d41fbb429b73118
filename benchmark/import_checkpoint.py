"""``import-checkpoint``: an author's released checkpoint -> a run directory that ``eval`` scores.

The run directory has the layout of a trained run (``config.json`` with the request, the method
config read from the checkpoint and the source files' paths and sha256, ``env.json``,
``stats.jsonl``, ``log.txt``, ``checkpoints/final/``), so ``python -m benchmark eval RUN_DIR``
re-scores it like any other run. A method supports this by a classmethod
``from_official_checkpoint(path, base_config, ctx, *, segmenter, parameters)`` (``ctx``: the
run's ``FitContext``, for whatever training the import needs) returning ``(fitted method,
provenance dict)``.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from segbench.benchmark.errors import UserError
from segbench.benchmark.records import device_info, env_info, new_run_dir, write_json
from segbench.benchmark.runner import (RunRequest, _setup_logging, config_record, log, resolve,
                              seed_everything)
from segbench.methods.context import STATS, FitContext, StatsLog, final_checkpoint_dir, resolve_device


def import_checkpoint(req: RunRequest, path: Path, *, segmenter: Path | None = None,
                      parameters: Path | None = None) -> Path:
    resolved = resolve(req)
    importer = getattr(resolved.method_cls, "from_official_checkpoint", None)
    if importer is None:
        raise UserError(f"method {req.method!r} has no importer for its authors' checkpoints")
    run_dir = new_run_dir(Path(req.out), resolved.protocol.spec.name, req.method, req.seed)
    handler = _setup_logging(run_dir)
    try:
        try:
            ctx = FitContext(seed=req.seed, device=resolve_device(req.device), progress=req.progress,
                             num_threads=req.num_threads, run_dir=run_dir, stats=StatsLog(run_dir / STATS))
            seed_everything(req.seed)
            method, provenance = importer(Path(path), resolved.method_config, ctx, segmenter=segmenter,
                                          parameters=parameters)
            method.save(final_checkpoint_dir(run_dir))
            write_json(run_dir / "config.json",
                       config_record(req, resolved, method.config, imported_from=provenance,
                                     fit_context=ctx.describe()))
            write_json(run_dir / "env.json", {**env_info(), "device": device_info(ctx.device)})
            ctx.log(phase="imported", **{k: v for k, v in provenance.items() if isinstance(v, (str, int, float))})
            log.info("imported %s into %s", path, run_dir)
        finally:
            log.removeHandler(handler)
            handler.close()
    except BaseException:
        shutil.rmtree(run_dir, ignore_errors=True)  # no half-written run folder for a failed import
        raise
    return run_dir
