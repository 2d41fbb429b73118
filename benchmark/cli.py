"""``python -m benchmark``: ls, run, eval, import-checkpoint, tables, prepare, bench-data, check-plugin, bench,
gpu-check.

Only the registries (plain strings) are imported at start-up, so ``ls`` answers without
importing torch; the heavy modules are imported inside the commands that need them.
"""
from __future__ import annotations

import argparse
import os
import sys
import traceback
from pathlib import Path

from segbench.benchmark.errors import Terminated, UserError, check_run_flags, one_line, sigterm_as_interrupt
from segbench.benchmark.registry import UnknownNameError

REGISTRY_KINDS = ("methods", "protocols", "datasets")


def _registry(kind: str):
    if kind == "methods":
        from segbench.methods import METHODS
        return METHODS
    if kind == "protocols":
        from segbench.protocols import PROTOCOLS
        return PROTOCOLS
    from segbench.datasets import DATASETS
    return DATASETS


def cmd_ls(args: argparse.Namespace) -> int:
    """One line per entry: name, summary (a plugin's from its distribution's metadata: nothing is
    imported), ``[distribution]`` for plugins; a malformed plugin entry is listed with a note."""
    registry = _registry(args.kind)
    width = max((len(n) for n in registry.names()), default=0)
    for entry in registry.entries():
        origin = "" if entry.origin == "builtin" else f"  [{entry.origin}]"
        summary = f"(broken: {entry.error})" if entry.error else entry.summary
        print(f"{entry.name:<{width}}  {summary}{origin}")
    if registry.scan_error:
        print(f"note: {registry.scan_error}")
    return 0


def cmd_check_plugin(args: argparse.Namespace) -> int:
    if ":" not in args.method:  # a typo costs milliseconds, not a torch import
        _registry("methods").entry(args.method)
    from segbench.benchmark.check_plugin import FAIL, SKIP, check_plugin

    results = check_plugin(args.method, device=args.device, limit=args.limit,
                           overrides=_key_values(args.set, "--set"), num_threads=args.threads)
    failed = [r.check for r in results if r.status == FAIL]
    skipped = [r.check for r in results if r.status == SKIP]
    note = f" ({len(skipped)} not applicable: {', '.join(skipped)})" if skipped else ""
    if failed:
        print(f"{args.method}: {len(failed)} of {len(results)} checks failed: {', '.join(failed)}{note}")
        return 2
    print(f"{args.method}: all checks passed{note}")
    return 0


def format_metrics(records: list[dict]) -> str:
    width = max([34] + [len(r["metric"]) + 2 for r in records])
    lines = [f"{'metric':<{width}} {'split':<16} {'value':>10} {'n_eval':>7}"]
    for r in records:
        arrow = "↑" if r["higher_is_better"] else "↓"
        lines.append(f"{r['metric'] + ' ' + arrow:<{width}} {r['split']:<16} {r['value']:>10.4f} {r['n_eval']:>7}")
    return "\n".join(lines)


def _key_values(items: list[str], flag: str) -> dict[str, str]:
    from segbench.benchmark.config import parse_set_args
    try:
        return parse_set_args(items)
    except UserError as exc:
        raise UserError(str(exc).replace("--set", flag)) from None


# Run flags whose default is applied only for a new run: ``None`` means "not given", so that
# ``--resume DIR`` can tell a flag the user typed (and refuse it if it changes the run).
RUN_DEFAULTS = {"preset": "paper", "seed": 0, "out": "runs", "batch_size": 32, "device": "auto", "threads": 0}


# Presets of built-in methods beyond PRESET_NAMES (a test keeps this equal to their PRESETS), so
# that an unknown preset is refused without importing the method (and torch).
BUILTIN_EXTRA_PRESETS = {"latent_direction": ("paper_a12",)}


def _check_preset(method: str, preset: str | None) -> None:
    """An unknown preset of a built-in method is refused before torch is imported; a plugin's
    presets are checked when it is loaded."""
    from segbench.benchmark.config import PRESET_NAMES

    known = (*PRESET_NAMES, *BUILTIN_EXTRA_PRESETS.get(method, ()))
    if preset is None or preset in known:
        return
    if _registry("methods").entry(method).origin == "builtin":
        import difflib
        close = difflib.get_close_matches(preset, known, n=3, cutoff=0.4)
        hint = f"did you mean {', '.join(close)}?" if close else f"known: {', '.join(known)}"
        raise UserError(f"unknown preset {preset!r}; {hint}")


def cmd_run(args: argparse.Namespace) -> int:
    if args.resume:
        return _cmd_resume(args)
    if not (args.method and args.protocol):
        raise UserError("run needs --method and --protocol (or --resume RUN_DIR)")
    for key, value in RUN_DEFAULTS.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    # Names, preset and flags first: a typo costs milliseconds, not a torch import, and nothing
    # is created on disk before every check passed.
    _registry("methods").entry(args.method)
    _registry("protocols").entry(args.protocol)
    _check_preset(args.method, args.preset)
    check_run_flags(limit=args.limit, batch_size=args.batch_size, seed=args.seed, num_threads=args.threads,
                    out=args.out)
    overrides, options = _key_values(args.set, "--set"), _key_values(args.option, "--option")
    from segbench.benchmark.runner import RunRequest, resolve, resolve_device, run
    from segbench.benchmark.config import dumps

    req = RunRequest(method=args.method, protocol=args.protocol, preset=args.preset, seed=args.seed,
                     overrides=overrides, options=options,
                     data_root=args.data_root, out=args.out, limit=args.limit, batch_size=args.batch_size,
                     progress=not args.no_progress, device=args.device, num_threads=args.threads)
    if args.dry_run:
        resolved = resolve(req)
        resolve_device(req.device)
        resolved.method_cls(resolved.method_config)  # the method's own checks, as a run would
        print(f"method {req.method} (preset {req.preset}):\n{dumps(resolved.method_config)}")
        print(f"protocol {req.protocol} v{resolved.protocol.spec.version}, options "
              f"{resolved.protocol.options}, dataset {resolved.dataset.describe()}")
        return 0
    with sigterm_as_interrupt():  # scancel / SLURM time limit: recorded and resumable, like Ctrl-C
        run_dir = run(req)
    return _report_run(run_dir)


def _cmd_resume(args: argparse.Namespace) -> int:
    """``run --resume DIR``: the recorded run, continued. Other run flags are refused when they
    differ from the recorded ones, except ``--set`` of the method's RESUMABLE_FIELDS, ``--device``,
    ``--threads``, ``--data-root`` (unfinished runs), ``--no-progress`` and ``--debug``."""
    given = {"--method": args.method, "--protocol": args.protocol, "--preset": args.preset, "--seed": args.seed,
             "--limit": args.limit, "--batch-size": args.batch_size, "--out": args.out}
    given = {k: v for k, v in given.items() if v is not None}
    if args.threads is not None:
        check_run_flags(num_threads=args.threads)
    from segbench.benchmark.runner import resume

    with sigterm_as_interrupt():
        run_dir = resume(Path(args.resume), data_root=args.data_root, progress=not args.no_progress,
                         device=args.device, num_threads=args.threads, overrides=_key_values(args.set, "--set"),
                         options=_key_values(args.option, "--option"), given=given,
                         trust_run_config=args.trust_run_config, dry_run=args.dry_run)
    if args.dry_run:
        print(f"resume {run_dir}: the recorded run and the flags given are consistent (nothing was run)")
        return 0
    return _report_run(run_dir)


def _report_run(run_dir: Path | None) -> int:
    if run_dir is None:  # a data-parallel rank other than 0: rank 0 reports the run
        return 0
    from segbench.benchmark.errors import read_json_file
    print(f"run directory: {run_dir}")
    print(format_metrics(read_json_file(run_dir / "metrics.json")))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from segbench.benchmark.runner import rescore

    records = rescore(Path(args.run_dir), data_root=args.data_root, progress=not args.no_progress,
                      batch_size=args.batch_size, device=args.device, trust_run_config=args.trust_run_config,
                      options=_key_values(args.option, "--option"))
    print(format_metrics(records))
    return 0


def cmd_import_checkpoint(args: argparse.Namespace) -> int:
    _registry("methods").entry(args.method)
    _registry("protocols").entry(args.protocol)
    _check_preset(args.method, args.preset)
    check_run_flags(seed=args.seed, out=args.out)
    for flag, value in (("path", args.path), ("--segmenter", args.segmenter), ("--parameters", args.parameters)):
        if value and not Path(value).is_file():
            raise UserError(f"{flag} {value}: no such file")
    from segbench.benchmark.import_checkpoint import import_checkpoint
    from segbench.benchmark.runner import RunRequest

    req = RunRequest(method=args.method, protocol=args.protocol, preset=args.preset, seed=args.seed,
                     overrides=_key_values(args.set, "--set"), options=_key_values(args.option, "--option"),
                     data_root=args.data_root, out=args.out, progress=not args.no_progress)
    run_dir = import_checkpoint(req, Path(args.path), segmenter=Path(args.segmenter) if args.segmenter else None,
                                parameters=Path(args.parameters) if args.parameters else None)
    print(f"run directory: {run_dir}")
    print(f"score it with: python -m benchmark eval {run_dir}")
    return 0


def cmd_tables(args: argparse.Namespace) -> int:
    from segbench.benchmark.tables import run_tables

    return run_tables(args.runs, args.paper, args.out, show=args.show, ci=args.ci,
                      ci_resamples=args.ci_resamples)


def cmd_prepare(args: argparse.Namespace) -> int:
    _registry("datasets").entry(args.dataset)  # a typo costs milliseconds, not a torch import
    if args.image_size is not None and args.image_size < 1:
        raise UserError(f"--image-size {args.image_size}: must be an integer >= 1 (pixels)")
    if args.workers is not None and args.workers < 1:
        raise UserError(f"--workers {args.workers}: must be an integer >= 1")
    from segbench.benchmark.prepare import default_workers, prepare_dataset

    prepare_dataset(args.dataset, args.data_root, image_size=args.image_size, splits=args.split or None,
                    force=args.force, workers=args.workers or default_workers(), verify_only=args.verify_only,
                    progress=not args.no_progress)
    return 0


def cmd_bench_data(args: argparse.Namespace) -> int:
    bad = [r for r in args.resolution if r < 1]
    if bad:
        raise UserError(f"--resolution {bad[0]}: must be an integer >= 1 (pixels)")
    if args.n < 1:
        raise UserError(f"--n {args.n}: must be an integer >= 1 (images to render)")
    from segbench.datasets.synthetic_parts import measure_throughput

    for resolution in args.resolution:
        print(f"synthetic_parts {resolution}px: {measure_throughput(resolution, n=args.n):.0f} images/s "
              "(image + part labels + mask + landmarks, one process)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmark", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of an error (otherwise one line naming the cause)")
    sub = parser.add_subparsers(dest="command", required=True)
    # --debug is also accepted after the command (SUPPRESS: not given there keeps the global value).
    debug = argparse.ArgumentParser(add_help=False)
    debug.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    sub_add = sub.add_parser

    def add_parser(*a, **kw):
        return sub_add(*a, parents=[debug], **kw)

    sub.add_parser = add_parser  # type: ignore[method-assign]

    p = sub.add_parser("ls", help="list registered methods, protocols or datasets")
    p.add_argument("kind", choices=REGISTRY_KINDS)
    p.set_defaults(func=cmd_ls)

    p = sub.add_parser("run", help="fit a method, score it on a protocol, write a run directory")
    p.add_argument("--method")
    p.add_argument("--protocol")
    p.add_argument("--resume", metavar="RUN_DIR", default=None,
                   help="continue an interrupted run in its directory with its recorded settings; other flags "
                        "that would change the run are refused, except --set of the method's resumable fields "
                        "(steps, intervals, learning rates), --device, --threads, --no-progress")
    p.add_argument("--preset", default=None, help="paper (default), quick or smoke")
    p.add_argument("--seed", type=int, default=None, help="default 0")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a method config field (typed; dotted keys for nested fields)")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="protocol option, e.g. regression=scops")
    p.add_argument("--data-root", default=None)
    p.add_argument("--out", default=None, help="where run folders go (default runs)")
    p.add_argument("--limit", type=int, default=None, help="at most this many images per split")
    p.add_argument("--batch-size", type=int, default=None, help="scoring batch size (default 32)")
    p.add_argument("--device", default=None, metavar="auto|cpu|cuda[:N]",
                   help="where fit runs (default auto: CUDA when present); recorded in config.json and env.json")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads during fit (0 = default)")
    p.add_argument("--dry-run", action="store_true", help="resolve and check everything, print the config, "
                                                          "run nothing and write nothing")
    p.add_argument("--trust-run-config", action="store_true",
                   help="with --resume: import code (module:Object) that the run folder's config names")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("eval", help="re-score a run from its checkpoint without retraining")
    p.add_argument("run_dir")
    p.add_argument("--data-root", default=None)
    p.add_argument("--batch-size", type=int, default=None,
                   help="scoring batch size (default: the run's); recorded in the rescored records")
    p.add_argument("--device", default=None, metavar="auto|cpu|cuda[:N]", help="where to score (default: the run's)")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="score another protocol variant (e.g. regression=liu) without retraining: records go to "
                        "metrics_variant-<key>-<value>.json, which tables reads beside metrics.json")
    p.add_argument("--trust-run-config", action="store_true",
                   help="accept code (module:Object) that the run folder's config names")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("import-checkpoint", help="an author's released checkpoint -> a run directory for eval")
    p.add_argument("method")
    p.add_argument("path", help="the official GAN checkpoint (ganseg: epoch_<e>.model with 'generator')")
    p.add_argument("--protocol", required=True, help="the protocol the run directory is for")
    p.add_argument("--segmenter", default=None, help="the official segmenter checkpoint ('detector'); "
                   "without it the segmenter is trained on the imported generator's pairs")
    p.add_argument("--parameters", default=None, help="the run's parameters.json (default: two folders above PATH)")
    p.add_argument("--preset", default="quick",
                   help="settings the checkpoint does not hold, i.e. the segmenter trained when no --segmenter is "
                        "given: quick (default; a small UNet, minutes on a CPU) or paper (DeepLabV3-ResNet50 10k x 64 "
                        "as the authors; a GPU job)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--data-root", default=None)
    p.add_argument("--out", default="runs")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_import_checkpoint)

    p = sub.add_parser("tables", help="aggregate runs over seeds, join the papers' numbers")
    p.add_argument("--runs", default=None, help="folder of run directories (default: the project's runs/)")
    p.add_argument("--paper", default=None, help="the papers' numbers, *.csv (default: the project's results/paper/)")
    p.add_argument("--out", default=None, help="where the tables go (default: the project's runs/tables/; "
                   "`make tables` regenerates the committed results/tables/)")
    p.add_argument("--show", action="store_true", help="print the main table")
    p.add_argument("--ci", action="store_true",
                   help="also paired bootstrap 95%% intervals of method differences from the runs' per-image "
                        "scores (scores_per_image.csv.gz): printed and written to ci.md / ci.csv")
    p.add_argument("--ci-resamples", type=int, default=10_000, metavar="N",
                   help="bootstrap resamples of the image ids for --ci (default 10000)")
    p.set_defaults(func=cmd_tables)

    p = sub.add_parser("prepare", help="verify a copy of an official dataset and build its resized cache")
    p.add_argument("dataset")
    p.add_argument("--data-root", default=None, help="the dataset folder or its parent ($SEGBENCH_DATA)")
    p.add_argument("--image-size", type=int, default=None, help="cache resolution (default: the protocols')")
    p.add_argument("--split", action="append", default=[], help="cache only this split (repeatable)")
    p.add_argument("--workers", type=int, default=None, help="decode threads (default: min(8, CPUs))")
    p.add_argument("--force", action="store_true", help="rebuild the cache even when it matches")
    p.add_argument("--verify-only", action="store_true", help="check presence, counts and decodes; write nothing")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("check-plugin", help="run the conformance suite on one method (exit 2 if a check fails)",
                       description="Fit one method at preset smoke on a few synthetic_parts images and check the "
                                   "method contract: config/presets, fit, valid predictions, scoring through the "
                                   "synthetic_parts protocol, batch invariance, seed determinism, save/load, no "
                                   "labels reachable from the fit images, samples. One PASS/FAIL/SKIP line each.")
    p.add_argument("method", help="a registered method name, or module:Class for one that is not registered")
    p.add_argument("--device", default="cpu", metavar="cpu|cuda[:N]|auto", help="where fit runs (default cpu)")
    p.add_argument("--limit", type=int, default=12, help="images per split (fit, regression_fit, test; default 12)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a field of the smoke config")
    p.add_argument("--threads", type=int, default=0,
                   help="torch CPU threads (0 = default; 1 is often fastest for the tiny smoke networks)")
    p.set_defaults(func=cmd_check_plugin)

    from segbench.benchmark import bench  # stdlib-only at import: torch loads when it runs
    p = sub.add_parser("bench", help="per-phase time, CPU time and GFLOP of a GANSeg training step",
                       description=bench.__doc__.splitlines()[0])
    bench.add_arguments(p)
    p.set_defaults(func=bench.main)

    from segbench.benchmark import gpu_check  # stdlib-only at import: torch loads when it runs
    p = sub.add_parser("gpu-check", help="speed and peak memory of GAN, segmenter and FID stages, fp32 and amp",
                       description=gpu_check.__doc__.splitlines()[0])
    gpu_check.add_arguments(p)
    p.set_defaults(func=gpu_check.run_from_args)

    from segbench.benchmark import reproduce_cli  # stdlib-only at import: planning loads the registries
    p = sub.add_parser("reproduce", help="run every cell of a paper table (reuse, resume, run) and render it",
                       description=reproduce_cli.__doc__.splitlines()[0])
    reproduce_cli.add_arguments(p)
    p.set_defaults(func=reproduce_cli.main)

    p = sub.add_parser("bench-data", help="images/s of the synthetic data generator")
    p.add_argument("--resolution", type=int, nargs="+", default=[32, 64, 128])
    p.add_argument("--n", type=int, default=500)
    p.set_defaults(func=cmd_bench_data)
    return parser


def _stdout_gone() -> None:
    """stdout's reader went away (``... | head``): send the rest to /dev/null so that the
    interpreter's final flush does not print a BrokenPipeError."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


def _print_error(line: str) -> None:
    rank = os.environ.get("RANK", "0")  # torchrun: say which rank of a data-parallel run speaks
    if rank not in ("", "0"):
        line = f"[rank {rank}] {line}"
    try:
        print(line, file=sys.stderr, flush=True)
    except (BrokenPipeError, OSError, ValueError):
        pass


def main(argv: list[str] | None = None) -> int:
    """Exit codes: 0 done; 2 a user error (one line ``error: ...`` on stderr naming the file or
    setting; ``--debug`` adds the traceback); 130 interrupted (Ctrl-C); 141 stdout closed early
    (``| head``; whatever ran has finished and is recorded); 1 a bug (traceback)."""
    args = build_parser().parse_args(argv)
    debug = bool(getattr(args, "debug", False)) or os.environ.get("SEGBENCH_DEBUG", "") not in ("", "0")
    try:
        code = args.func(args)
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        _stdout_gone()
        return 141
    except KeyboardInterrupt as exc:
        if debug:
            traceback.print_exc()
        _print_error(str(exc) if isinstance(exc, Terminated) else "interrupted")
        return 130
    except (UserError, UnknownNameError) as exc:
        if debug:
            traceback.print_exc()
        prefix = getattr(exc, "prefix", "error: ")
        _print_error(f"{prefix}{one_line(exc)}")
        return int(getattr(exc, "exit_code", 2))
    finally:
        if "torch.distributed" in sys.modules:  # a torchrun rank leaves its process group
            from segbench.methods.common.parallel import shutdown

            shutdown()
