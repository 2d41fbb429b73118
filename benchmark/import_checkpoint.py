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
from segbench.benchmark.records import git_label, git_state, utc_now
from segbench.benchmark.runner import (CONFIG_FILE, RunLock, RunRequest, _append_env, _create_run_dir, _remove_empty,
                                       _session, config_record, log, resolve, seed_everything, validate_request)
from segbench.methods.context import FitContext, final_checkpoint_dir, resolve_device, write_json_atomic


def import_checkpoint(req: RunRequest, path: Path, *, segmenter: Path | None = None,
                      parameters: Path | None = None) -> Path:
    validate_request(req)
    for label, file in (("checkpoint", path), ("--segmenter", segmenter), ("--parameters", parameters)):
        if file is not None and not Path(file).is_file():
            raise UserError(f"{label} {file}: no such file")
    resolved = resolve(req)
    importer = getattr(resolved.method_cls, "from_official_checkpoint", None)
    if importer is None:
        raise UserError(f"method {req.method!r} has no importer for its authors' checkpoints")
    device = resolve_device(req.device)
    git = git_state()
    run_dir, created = _create_run_dir(req, resolved.protocol.spec.name)
    try:
        with RunLock(run_dir, "import-checkpoint"), _session(run_dir, "import-checkpoint", new=True,
                                                             created=created, resumable=False) as stats:
            ctx = FitContext(seed=req.seed, device=device, progress=req.progress, num_threads=req.num_threads,
                             run_dir=run_dir, stats=stats)
            seed_everything(req.seed)
            method, provenance = importer(Path(path), resolved.method_config, ctx, segmenter=segmenter,
                                          parameters=parameters)
            method.save(final_checkpoint_dir(run_dir))
            label = git_label(git)
            write_json_atomic(run_dir / CONFIG_FILE,
                              config_record(req, resolved, method.config, imported_from=provenance,
                                            fit_context=ctx.describe(), git_hash=label, train_git_hash=label,
                                            started=utc_now().isoformat(timespec="seconds")))
            _append_env(run_dir, "start", ctx.device, git)
            ctx.log(phase="imported", **{k: v for k, v in provenance.items() if isinstance(v, (str, int, float))})
            log.info("imported %s into %s", path, run_dir)
    except BaseException:
        # An import is all or nothing: no half-written run folder, even one holding a segmenter snapshot.
        shutil.rmtree(run_dir, ignore_errors=True)
        _remove_empty(created)
        raise
    return run_dir
