"""Fit -> save -> score -> record. ``run`` trains a method and writes a run directory;
``resume`` continues one; ``rescore`` re-evaluates a run from its checkpoint without retraining.

The run lifecycle (one place; the README's run-folder table names the files):

- **Validation first.** Flags, names, the method config and the data are resolved and checked
  before anything is written; the method is built; only then is the run folder made. A command
  that fails leaves no run folder, unless the failure came after training progress was saved (a
  training snapshot or the final checkpoint): then the folder stays and the one-line error says
  ``resume with: python -m benchmark run --resume DIR``.
- **One error path.** A ``UserError`` (bad input, corrupt run file, divergence) inside a run is
  written to ``log.txt`` and a ``{"phase": "error"}`` row of ``stats.jsonl``, then reaches the CLI
  as one line (exit 2); Ctrl-C becomes ``RunInterrupted`` (exit 130, with the resume command).
  Errors found before the run folder's lock is taken (bad flags, an untrusted code target, a
  corrupt ``config.json``, the lock held) change nothing in the folder and are not written to it.
- **Atomic records.** ``config.json``, ``env.json``, ``metrics.json`` and
  ``metrics_rescored.json`` are written under a unique temporary name and ``os.replace``d
  (``write_json_atomic``); ``Method.save`` and the training snapshots are atomic too.
- **One process per folder.** ``run``, ``resume`` and ``eval`` hold ``fcntl.flock`` on
  ``<run>/.lock``; a second one exits 2 at once.
- **History, not overwrites.** ``env.json`` is a list of environments (``event`` ``start``, then
  one ``resume`` per continuation); ``config.json`` keeps the request it started with and lists
  each continuation under ``resumes`` (flags given, ``--set`` overrides of ``RESUMABLE_FIELDS``,
  the code's git label); ``method_config`` is the effective config. ``stats.jsonl`` gets a
  ``{"phase": "resumed", "from_step": {...}}`` marker (``methods.context.read_stats``).
- **Data-parallel runs.** Under ``torchrun`` (``WORLD_SIZE`` > 1) every rank parses the same
  command; rank 0 does everything above (checks, folder, lock, records, scoring) and, right
  before ``fit``, sends its resolved request to the other ranks, which fit alongside it (see
  ``methods.common.parallel``) and write nothing. If rank 0 stops before that, it tells them
  and they exit 2 too.
- **Run folders are data.** A ``module:Object`` string in a recorded config (e.g.
  latent_direction's ``generator.target``) that the method's own presets do not set is code named
  by the folder: ``resume``/``eval`` refuse it unless it is given on the command line again
  (``--set key=value``) or ``--trust-run-config`` is passed.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import random
import re
import shutil
import signal
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
import torch

from segbench.benchmark import figures
from segbench.benchmark.config import apply_overrides, to_jsonable
from segbench.benchmark.errors import (RunFileError, RunInterrupted, RunLockedError, Terminated, UserError,
                                       check_run_flags, one_line, read_json_file)
from segbench.benchmark.records import device_info, env_info, git_label, git_state, metric_records, new_run_dir, utc_now
from segbench.datasets import DATASETS
from segbench.datasets.paths import resolve_data_root
from segbench.methods import METHODS
from segbench.methods.common.loop import TrainingDiverged
from segbench.methods.common.parallel import broadcast_object, init_from_env, launched_by_torchrun, rank_seed, world
from segbench.methods.context import (CHECKPOINTS, STATS, TRAINING, FitContext, StatsLog, final_checkpoint_dir,
                                      resolve_device, write_json_atomic)
from segbench.protocols import PROTOCOLS

log = logging.getLogger("segbench")

CONFIG_FILE = "config.json"
ENV_FILE = "env.json"
METRICS_FILE = "metrics.json"
METRICS_RESCORED_FILE = "metrics_rescored.json"
LOCK_FILE = ".lock"
RESUME_COMMAND = "python -m benchmark run --resume {run_dir}"
# A "module:Object" string: what a config field names when it names code to import.
CODE_TARGET = re.compile(r"^\s*[A-Za-z_][\w.]*\s*:\s*[A-Za-z_][\w.]*\s*$")


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


def validate_request(req: RunRequest, *, check_out: bool = True) -> None:
    """The request's own values (``--limit``, ``--batch-size``, ``--seed``, ``--threads``, ``--out``)."""
    check_run_flags(limit=req.limit, batch_size=req.batch_size, seed=req.seed, num_threads=req.num_threads,
                    out=req.out if check_out else None)


def resolve_method_config(req: RunRequest) -> tuple[type, Any]:
    """The method class and its config for ``req`` (defaults -> dataset values -> preset ->
    ``--set``, K from the protocol unless set), validated; nothing else is built."""
    method_cls = METHODS.get(req.method)
    spec = PROTOCOLS.get(req.protocol).spec
    missing = set(spec.needs) - set(method_cls.produces)
    if missing:
        raise UserError(f"protocol {spec.name!r} needs {sorted(missing)} but method {req.method!r} "
                        f"produces only {sorted(method_cls.produces)}")
    overrides = dict(req.overrides)
    fixed = method_cls.fixed_num_parts
    if fixed is not None:  # e.g. foreground-only methods: K is theirs, not the protocol's
        if "num_parts" in overrides and str(overrides["num_parts"]).strip() != str(fixed):
            raise UserError(f"--set num_parts={overrides['num_parts']}: method {req.method!r} always has "
                            f"num_parts={fixed}")
        overrides["num_parts"] = fixed
    elif "num_parts" not in overrides:
        overrides["num_parts"] = spec.num_parts  # the protocol's K unless the user sets one
    return method_cls, method_cls.config_for(req.preset, overrides, dataset=spec.dataset)


def resolve(req: RunRequest) -> Resolved:
    method_cls, config = resolve_method_config(req)
    protocol_cls = PROTOCOLS.get(req.protocol)
    spec = protocol_cls.spec
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


def _context(req: RunRequest, resolved: Resolved, run_id: str, git: Mapping[str, Any], date: str,
             train_git_hash: str | None = None) -> dict:
    """The run context of every metric record: ``git_hash`` is the scoring code's label (today's
    for ``eval``), ``train_git_hash`` the label of the code that trained the model."""
    spec = resolved.protocol.spec
    return {"method": req.method, "protocol": spec.name, "protocol_version": spec.version,
            "dataset": spec.dataset, "seed": req.seed, "run_id": run_id,
            "num_parts": int(getattr(resolved.method_config, "num_parts", 0)), "preset": req.preset,
            "limit": req.limit, "batch_size": req.batch_size,
            "git_hash": git_label(git), "train_git_hash": train_git_hash or git_label(git), "date": date}


# ----------------------------------------------------------------------------- data-parallel ranks

_announced = {"done": True}  # whether rank 0 has told the other ranks what to do (one message)


def _announce(kind: str, payload: Any) -> None:
    """Rank 0's one message to the other ranks: ``("fit", request)`` or ``("stop", reason)``."""
    if world().size > 1 and world().main and not _announced["done"]:
        _announced["done"] = True
        broadcast_object((kind, payload))


def _data_parallel(device_name: str, lead: Any) -> Path | None:
    """Run ``lead(device)`` as this process's command. Under torchrun, join the process group
    first: rank 0 leads (and announces the fit, or its failure, to the others); the other ranks
    follow (``_follow``) and return None."""
    device = resolve_device(device_name)  # a bad --device fails on every rank alike, before joining
    if not launched_by_torchrun():
        return lead(device)
    device = init_from_env(device)
    if not world().main:
        return _follow(device)
    _announced["done"] = False
    try:
        result = lead(device)
    except BaseException as exc:
        _announce("stop", one_line(exc) or type(exc).__name__)
        raise
    _announce("done", None)  # rank 0 finished without a fit (nothing to follow): release the others
    return result


def _follow(device: torch.device) -> None:
    """A rank other than 0: fit with rank 0's resolved request on this rank's device; the run
    folder is rank 0's (this rank's context has none, so it writes nothing)."""
    kind, payload = broadcast_object(None)
    if kind == "stop":
        raise UserError(f"rank 0 stopped: {payload}")
    if kind == "done":
        return None
    req: RunRequest = payload
    resolved = resolve(req)
    fit_split = resolved.dataset.split(resolved.protocol.spec.splits["fit"], limit=req.limit)
    seed_everything(rank_seed(req.seed))
    method = resolved.method_cls(resolved.method_config)
    ctx = FitContext(seed=req.seed, device=device, progress=False, num_threads=req.num_threads)
    method.fit(fit_split.fit_images(), ctx)
    return None


# ----------------------------------------------------------------------------- the lock

class RunLock:
    """``fcntl.flock`` on ``<run>/.lock`` for the life of a command: a second run, resume or eval of
    the same folder fails at once with one line (``RunLockedError``). The file holds the holder's
    pid and command for that message; it is left in place (removing a lock file races)."""

    def __init__(self, run_dir: Path, command: str) -> None:
        self.path = Path(run_dir) / LOCK_FILE
        self.command = command
        self.fd: int | None = None

    def __enter__(self) -> "RunLock":
        import fcntl

        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise RunFileError(f"{self.path}: cannot create the run folder's lock "
                               f"({exc.strerror or type(exc).__name__})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            try:
                holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            finally:
                os.close(fd)
            raise RunLockedError(f"{self.path.parent} is in use ({holder}): one run, resume or eval of a run "
                                 "folder at a time; wait for it to finish") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{self.command} by pid {os.getpid()} since {utc_now().isoformat(timespec='seconds')}\n"
                  .encode(), 0)
        self.fd = fd
        return self

    def __exit__(self, *exc: Any) -> None:
        import fcntl

        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, 0)
                fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


# ----------------------------------------------------------------------------- run folders

def _missing_parents(path: Path) -> list[Path]:
    """The folders above and including ``path`` that do not exist yet, outermost first."""
    missing = []
    for p in [path, *path.parents]:
        if p.exists():
            break
        missing.append(p)
    return missing[::-1]


def _create_run_dir(req: RunRequest, protocol: str) -> tuple[Path, list[Path]]:
    """A new run folder, and the parents this call created (removed again if the run fails)."""
    created = _missing_parents(Path(req.out) / protocol / req.method)
    try:
        return new_run_dir(Path(req.out), protocol, req.method, req.seed), created
    except OSError as exc:
        _remove_empty(created)
        raise UserError(f"--out {req.out}: cannot create the run folder ({exc.strerror or type(exc).__name__}: "
                        f"{exc.filename})") from None


def _remove_empty(folders: list[Path]) -> None:
    for folder in reversed(folders):
        with contextlib.suppress(OSError):
            folder.rmdir()


def training_snapshots(run_dir: Path) -> list[Path]:
    """The training snapshots of a run folder (``checkpoints/training/<stage>/<stage>.pt``)."""
    return sorted(p for p in (Path(run_dir) / CHECKPOINTS / TRAINING).glob("*/*.pt") if p.is_file())


def has_progress(run_dir: Path) -> bool:
    """Whether a run folder holds work a resume would continue from (a training snapshot or the
    final checkpoint)."""
    return bool(training_snapshots(run_dir)) or (final_checkpoint_dir(run_dir) / "state.pt").is_file()


def snapshot_steps(run_dir: Path) -> dict[str, int | None]:
    """Step of each training snapshot, by stage; a truncated or foreign snapshot is a one-line
    ``RunFileError`` naming it (found before any training starts)."""
    steps: dict[str, int | None] = {}
    for path in training_snapshots(run_dir):
        try:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception as exc:  # truncated, random bytes, an old format
            raise RunFileError(f"{path}: unreadable training snapshot ({type(exc).__name__}); delete it to restart "
                               "that stage") from None
        step = state.get("step") if isinstance(state, dict) else None
        steps[path.stem] = int(step) if isinstance(step, int) and not isinstance(step, bool) else None
    return steps


@dataclass
class RunFolder:
    """A run folder as recorded: its ``config.json`` and the effective request (the one it was
    started with, updated by every continuation's resumable overrides and flags)."""

    path: Path
    config: dict[str, Any]
    request: RunRequest

    @property
    def finished(self) -> bool:
        return (self.path / METRICS_FILE).is_file()

    @property
    def resumes(self) -> list[dict[str, Any]]:
        return list(self.config.get("resumes") or [])


def _bad_request(path: Path, key: str, value: Any, expected: str) -> RunFileError:
    return RunFileError(f"{path}: request.{key}={value!r} is not {expected}; the file was edited or is corrupt")


def read_run_folder(run_dir: Path) -> RunFolder:
    """``config.json`` of a run folder, checked: a missing folder, a truncated or edited file is
    one line naming it."""
    run_dir = Path(run_dir)
    path = run_dir / CONFIG_FILE
    if not run_dir.is_dir():
        raise UserError(f"{run_dir}: no such run directory")
    if not path.is_file():
        raise UserError(f"{run_dir} is not a run directory (no {CONFIG_FILE})")
    config = read_json_file(path, "the run's config")
    if not isinstance(config, dict) or not isinstance(config.get("request"), dict):
        raise RunFileError(f"{path}: not a segbench run config (no 'request' object)")
    recorded = dict(config["request"])
    names = {f.name for f in dataclasses.fields(RunRequest)}
    values = {k: v for k, v in recorded.items() if k in names}
    for key in ("method", "protocol"):
        if not isinstance(values.get(key), str) or not values[key]:
            raise _bad_request(path, key, values.get(key), "a name")
    for key, expected in (("preset", str), ("out", str), ("device", str)):
        if key in values and not isinstance(values[key], expected):
            raise _bad_request(path, key, values[key], "a string")
    for key in ("overrides", "options"):
        if key in values and not (isinstance(values[key], dict)
                                  and all(isinstance(k, str) for k in values[key])):
            raise _bad_request(path, key, values[key], "an object of key=value settings")
    if values.get("data_root") is not None and not isinstance(values["data_root"], str):
        raise _bad_request(path, "data_root", values["data_root"], "a path or null")
    request = RunRequest(**values)
    try:
        validate_request(request, check_out=False)
    except UserError as exc:  # e.g. an edited "limit": 0
        raise RunFileError(f"{path}: the recorded request is invalid ({one_line(exc)}); the file was edited or "
                           "is corrupt") from None
    for entry in config.get("resumes") or []:
        if not isinstance(entry, dict):
            raise RunFileError(f"{path}: 'resumes' holds a {type(entry).__name__}, expected objects")
        request = dataclasses.replace(
            request, overrides={**request.overrides, **dict(entry.get("overrides") or {})},
            **{k: entry[k] for k in ("data_root", "device", "num_threads") if entry.get(k) is not None})
    return RunFolder(run_dir, config, request)


# ----------------------------------------------------------------------------- trust

def _string_leaves(obj: Any, prefix: str = "") -> Iterator[tuple[str, str]]:
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            yield from _string_leaves(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _string_leaves(v, f"{prefix}.{i}")
    elif isinstance(obj, str):
        yield prefix, obj


def _leaf(obj: Any, key: str) -> Any:
    for part in key.split("."):
        if isinstance(obj, Mapping) and part in obj:
            obj = obj[part]
        elif isinstance(obj, (list, tuple)) and part.isdigit() and int(part) < len(obj):
            obj = obj[int(part)]
        else:
            return None
    return obj


def check_code_targets(folder: RunFolder, sources: Mapping[str, Any], *, given: Mapping[str, str] = {},
                       trust: bool = False, command: str = "resume") -> None:
    """Refuse a ``module:Object`` value that only the run folder names (not the method's presets,
    not the command line): importing it would run code from the folder. ``sources``: file label ->
    the jsonable config read from it; ``given``: this command's ``--set`` values."""
    if trust:
        return
    req = folder.request
    method_cls = METHODS.get(req.method)
    spec = PROTOCOLS.get(req.protocol).spec
    fixed = method_cls.fixed_num_parts
    base = {"num_parts": fixed if fixed is not None else spec.num_parts}
    try:  # what the code itself sets: defaults, dataset values, the preset
        code_given = to_jsonable(method_cls.config_for(req.preset, base, dataset=spec.dataset))
    except UserError:
        code_given = {}
    for label, config in sources.items():
        for key, value in _string_leaves(config):
            if not CODE_TARGET.match(value) or _leaf(code_given, key) == value:
                continue
            if key in given and str(given[key]).strip() == value.strip():
                continue
            how = f"give --set {key}={value} again or pass --trust-run-config" if command == "resume" else \
                "pass --trust-run-config"
            raise UserError(f"{label} sets {key}={value}: code named by the run folder is not imported unless you "
                            f"trust it: {how}")
    for key, value in req.options.items():
        if isinstance(value, str) and CODE_TARGET.match(value):
            raise UserError(f"{folder.path / CONFIG_FILE} sets --option {key}={value}: code named by the run folder "
                            "is not imported unless you pass --trust-run-config")


# ----------------------------------------------------------------------------- one session

def _train_git_label(folder: RunFolder) -> str:
    """The git label of the code that trained the run: the last training session's (start or
    resume) from ``config.json``, else from ``env.json`` (old folders), else ``unknown``."""
    for entry in reversed(folder.resumes):
        if isinstance(entry.get("git_hash"), str):
            return entry["git_hash"]
    if isinstance(folder.config.get("train_git_hash"), str):
        return folder.config["train_git_hash"]
    with contextlib.suppress(UserError):
        env = read_json_file(folder.path / ENV_FILE)
        entries = env if isinstance(env, list) else [env]
        for entry in reversed(entries):
            if isinstance(entry, dict) and isinstance(entry.get("git"), dict) and "commit" in entry["git"]:
                return git_label({"dirty": False, **entry["git"]})
    return "unknown"


def _append_env(run_dir: Path, event: str, device: torch.device, git: Mapping[str, Any]) -> None:
    """``env.json``: the list of environments the run ran in (``start``, each ``resume``). A
    one-object ``env.json`` of an older run becomes the list's first entry."""
    path = run_dir / ENV_FILE
    history: list[Any] = []
    if path.is_file():
        try:
            old = read_json_file(path)
            history = old if isinstance(old, list) else [{"event": "start", **old}] if isinstance(old, dict) else []
        except RunFileError as exc:  # keep the run going; say what was lost
            log.warning("%s; starting a new environment history", exc)
    history.append({"event": event, "date": utc_now().isoformat(timespec="seconds"), "argv": sys.argv,
                    **env_info(), "git": dict(git), "device": device_info(device)})
    write_json_atomic(path, history)


@contextlib.contextmanager
def _no_sigint() -> Iterator[None]:
    """SIGINT ignored while a failure is being recorded (a second Ctrl-C would cut it short)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _is_out_of_memory(exc: BaseException) -> bool:
    return isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError" or (
        isinstance(exc, RuntimeError) and "can't allocate memory" in str(exc))


@contextlib.contextmanager
def _session(run_dir: Path, command: str, *, new: bool, created: list[Path] = (),
             resumable: bool = True) -> Iterator[StatsLog]:
    """Logging to ``log.txt`` and the run's ``StatsLog`` for one command on a run folder; a failure
    is recorded there and turned into its one line. A new run's folder is removed again unless it
    holds progress and is ``resumable`` (then the line says how to resume)."""
    run_dir = Path(run_dir)
    handler = _setup_logging(run_dir)
    stats = StatsLog(run_dir / STATS)
    hint = "resume with: " + RESUME_COMMAND.format(run_dir=run_dir)
    try:
        yield stats
    except BaseException as exc:
        with _no_sigint():
            # A diverged run is kept even without a snapshot: its log and stats say what happened,
            # and `--resume DIR --set lr...=<saner>` continues (or restarts) it in place.
            diverged = isinstance(exc, (TrainingDiverged, FloatingPointError))
            kept = not new or (resumable and (has_progress(run_dir) or diverged))
            # The resume command, where a resume would continue saved progress.
            tail = f"; {hint}" if command in ("run", "resume") and kept and (has_progress(run_dir) or diverged) \
                else ""
            if isinstance(exc, KeyboardInterrupt):
                what = str(exc) if isinstance(exc, Terminated) else "interrupted"
                message = f"{what}{tail}" if tail or not new else \
                    f"{what} before any progress was saved; nothing to resume (run folder removed)"
                error: BaseException = RunInterrupted(message)
            elif isinstance(exc, UserError):
                message = one_line(exc)
                message += tail if "--resume" not in message else ""
                error = type(exc)(message) if _same_signature(exc) else UserError(message)
            elif isinstance(exc, FloatingPointError):  # Method.save refusing non-finite weights
                message = one_line(exc) + tail
                error = UserError(message)
            elif _is_out_of_memory(exc):
                message = (f"out of memory during {command} ({type(exc).__name__}): lower the batch size or the "
                           f"model size (--set ...){tail}")
                error = UserError(message)
            else:  # a bug: the traceback is shown; the folder keeps what can be resumed
                message = f"{type(exc).__name__}: {one_line(exc)}"
                error = exc
                if tail:
                    with contextlib.suppress(AttributeError):
                        exc.add_note(f"progress kept in {run_dir}{tail}")
            with contextlib.suppress(Exception):
                stats.write(phase="error", command=command, error=message, type=type(exc).__name__)
                if error is exc:
                    log.error("%s failed:\n%s", command, "".join(traceback.format_exception(exc)))
                else:
                    log.error("%s", message)
            log.removeHandler(handler)
            handler.close()
            handler = None
            if not kept:
                shutil.rmtree(run_dir, ignore_errors=True)
                _remove_empty(list(created))
        if error is exc:
            raise
        raise error from exc
    finally:
        if handler is not None:
            log.removeHandler(handler)
            handler.close()


def _same_signature(exc: UserError) -> bool:
    """Whether ``type(exc)(message)`` rebuilds the error (its class takes one message)."""
    try:
        type(exc)("x")
        return True
    except TypeError:
        return False


def _fit_score_record(run_dir: Path, req: RunRequest, resolved: Resolved, method: Any, fit_split: Any,
                      ctx: FitContext, stats: StatsLog, git: Mapping[str, Any]) -> None:
    spec = resolved.protocol.spec
    t0 = time.perf_counter()
    _announce("fit", req)
    method.fit(fit_split.fit_images(), ctx)
    stats.write(phase="fit_done", fit_seconds=time.perf_counter() - t0, n_fit=len(fit_split))
    method.save(final_checkpoint_dir(run_dir))
    t0 = time.perf_counter()
    label = git_label(git)
    context = _context(req, resolved, run_dir.name, git, utc_now().date().isoformat(), train_git_hash=label)
    records = score(method, resolved, req, context, run_dir=run_dir)
    stats.write(phase="eval_done", eval_seconds=time.perf_counter() - t0)
    write_json_atomic(run_dir / METRICS_FILE, records)
    test_split = resolved.dataset.split(spec.splits[spec.scored_role], limit=req.limit)
    figures.save_run_figures(method, test_split, run_dir / "figures", seed=req.seed)
    log.info("metrics: %s", {r["metric"]: r["value"] for r in records})


# ----------------------------------------------------------------------------- commands

def run(req: RunRequest, resume_dir: Path | None = None) -> Path:
    """Fit, save, score and record into a new run folder. Everything is resolved and checked
    first; the folder is made only then. (``resume_dir``: see ``resume``.)"""
    if resume_dir is not None:
        return resume(resume_dir, data_root=req.data_root, progress=req.progress)
    return _data_parallel(req.device, lambda device: _run(req, device))


def check_data_parallel_batches(method_cls: type, method_config: Any) -> None:
    """Every global batch the method splits over the processes divides by the world size (one
    line naming the field, before any folder is made)."""
    size = world().size
    for key in getattr(method_cls, "DATA_PARALLEL_BATCHES", ()) if size > 1 else ():
        value = _leaf(to_jsonable(method_config), key)
        if isinstance(value, int) and value % size:
            raise UserError(f"{key}={value} does not split over {size} processes; use a multiple of {size}")


def _run(req: RunRequest, device: torch.device) -> Path:
    validate_request(req)
    resolved = resolve(req)
    check_data_parallel_batches(resolved.method_cls, resolved.method_config)
    spec = resolved.protocol.spec
    fit_split = resolved.dataset.split(spec.splits["fit"], limit=req.limit)
    seed_everything(req.seed)
    method = resolved.method_cls(resolved.method_config)  # its own checks, before the folder
    git = git_state()
    run_dir, created = _create_run_dir(req, spec.name)
    with RunLock(run_dir, "run"), _session(run_dir, "run", new=True, created=created) as stats:
        ctx = FitContext(seed=req.seed, device=device, progress=req.progress, num_threads=req.num_threads,
                         run_dir=run_dir, stats=stats)
        label = git_label(git)
        write_json_atomic(run_dir / CONFIG_FILE, config_record(
            req, resolved, resolved.method_config, fit_context=ctx.describe(), git_hash=label, train_git_hash=label,
            started=utc_now().isoformat(timespec="seconds")))
        _append_env(run_dir, "start", ctx.device, git)
        log.info("run %s: method=%s preset=%s protocol=%s seed=%d", run_dir, req.method, req.preset, spec.name,
                 req.seed)
        _fit_score_record(run_dir, req, resolved, method, fit_split, ctx, stats, git)
    return run_dir


def recorded_request(run_dir: Path, data_root: str | None = None, progress: bool = True) -> RunRequest:
    """The request a run directory was started with, with its continuations' changes
    (``--data-root`` may point elsewhere now)."""
    req = read_run_folder(run_dir).request
    return dataclasses.replace(req, data_root=data_root if data_root is not None else req.data_root,
                               progress=progress)


# Flags that a continuation may not change (they are the run): flag -> RunRequest field.
FIXED_ON_RESUME = {"--method": "method", "--protocol": "protocol", "--preset": "preset", "--seed": "seed",
                   "--limit": "limit", "--batch-size": "batch_size", "--out": "out"}


def _resumable(key: str, fields: tuple[str, ...]) -> bool:
    return any(key == f or key.startswith(f + ".") for f in fields)


def _check_resume_flags(folder: RunFolder, given: Mapping[str, Any], overrides: Mapping[str, str],
                        options: Mapping[str, str], method_cls: type, recorded_config: Any) -> dict[str, str]:
    """Refuse a flag that would change the recorded run; return the ``--set`` overrides that change
    a field of ``RESUMABLE_FIELDS`` (allowed)."""
    req, where = folder.request, f"--resume {folder.path}"
    for flag, value in given.items():
        name = FIXED_ON_RESUME.get(flag)
        if name is None or value is None:
            continue
        recorded = getattr(req, name)
        same = str(Path(value)) == str(Path(recorded)) if name == "out" else value == recorded
        if not same:
            raise UserError(f"{where}: {flag} {value} differs from the run's {recorded!r}; a resume continues the "
                            f"recorded run (start a new run for other settings)")
    for key, value in options.items():
        if str(req.options.get(key)) != str(value):
            raise UserError(f"{where}: --option {key}={value} differs from the run's "
                            f"{req.options.get(key)!r}; a resume continues the recorded run")
    fields = tuple(getattr(method_cls, "RESUMABLE_FIELDS", ()))
    allowed: dict[str, str] = {}
    before = to_jsonable(recorded_config)
    for key, value in overrides.items():
        if _resumable(key, fields):
            allowed[key] = value
            continue
        after = to_jsonable(apply_overrides(recorded_config, {key: value}))
        if _leaf(after, key) != _leaf(before, key):
            can = ", ".join(fields) if fields else f"none for {req.method}"
            raise UserError(f"{where}: --set {key}={value} would change {key} (the run has "
                            f"{_leaf(before, key)!r}); a resume may change only: {can}")
    return allowed


def resume(run_dir: Path, data_root: str | None = None, progress: bool = True, *, device: str | None = None,
           num_threads: int | None = None, overrides: Mapping[str, str] = {}, options: Mapping[str, str] = {},
           given: Mapping[str, Any] = {}, trust_run_config: bool = False, dry_run: bool = False) -> Path:
    """Continue a run in its folder: ``fit`` is called again there and each training stage picks up
    its snapshot. ``given``: the other run flags on the command line (``{"--seed": 3}``), refused
    when they differ from the recorded run; ``overrides``: ``--set`` values, allowed for the
    method's ``RESUMABLE_FIELDS`` (recorded under ``resumes`` in ``config.json``); a different
    ``--data-root`` for a finished run is refused (that is ``eval``). Under torchrun every rank
    reads the folder's recorded device (the folder must be on a file system all ranks see)."""
    run_dir = Path(run_dir)
    recorded_device = read_run_folder(run_dir).request.device if device is None else device
    if dry_run:  # checks only, on every rank alike: no process group, nothing to follow
        return _resume(run_dir, data_root, progress, device=device, num_threads=num_threads, overrides=overrides,
                       options=options, given=given, trust_run_config=trust_run_config, dry_run=True,
                       dev=resolve_device(recorded_device))
    return _data_parallel(recorded_device, lambda dev: _resume(
        run_dir, data_root, progress, device=device, num_threads=num_threads, overrides=overrides, options=options,
        given=given, trust_run_config=trust_run_config, dry_run=dry_run, dev=dev))


def _resume(run_dir: Path, data_root: str | None, progress: bool, *, device: str | None, num_threads: int | None,
            overrides: Mapping[str, str], options: Mapping[str, str], given: Mapping[str, Any],
            trust_run_config: bool, dry_run: bool, dev: torch.device) -> Path:
    folder = read_run_folder(run_dir)
    req = folder.request
    method_cls = METHODS.get(req.method)
    if num_threads is not None and not (isinstance(num_threads, int) and num_threads >= 0):
        raise UserError(f"--threads {num_threads}: must be an integer >= 0 (0 = the process default)")
    _, recorded_config = resolve_method_config(req)  # the recorded config, before changes
    changes = _check_resume_flags(folder, given, overrides, options, method_cls, recorded_config)
    if data_root is not None and folder.finished:
        spec = PROTOCOLS.get(req.protocol).spec
        old, new = resolve_data_root(req.data_root, spec.dataset), resolve_data_root(data_root, spec.dataset)
        if (old and old.resolve()) != (new and new.resolve()):
            raise UserError(f"--resume {run_dir}: the run finished on data root {old}; to score it on {data_root} "
                            f"use: python -m benchmark eval {run_dir} --data-root {data_root}")
    req = dataclasses.replace(req, overrides={**req.overrides, **changes}, progress=progress,
                              data_root=data_root if data_root is not None else req.data_root,
                              device=device if device is not None else req.device,
                              num_threads=num_threads if num_threads is not None else req.num_threads)
    resolved = resolve(req)
    check_code_targets(folder, {str(run_dir / CONFIG_FILE): to_jsonable(resolved.method_config)},
                       given=overrides, trust=trust_run_config)
    if dry_run:
        snapshot_steps(run_dir)
        return run_dir
    with RunLock(run_dir, "resume"), _session(run_dir, "resume", new=False) as stats:
        from_step = snapshot_steps(run_dir)
        spec = resolved.protocol.spec
        fit_split = resolved.dataset.split(spec.splits["fit"], limit=req.limit)
        git = git_state()
        session = 2 + len(folder.resumes)
        entry = {"session": session, "date": utc_now().isoformat(timespec="seconds"), "argv": sys.argv,
                 "overrides": dict(changes), "device": req.device, "num_threads": req.num_threads,
                 "world_size": world().size,
                 "data_root": data_root, "git_hash": git_label(git), "from_step": from_step,
                 "finished_before": folder.finished}
        config = {**folder.config, "method_config": to_jsonable(resolved.method_config),
                  "resumes": [*folder.resumes, entry]}
        write_json_atomic(run_dir / CONFIG_FILE, config)
        _append_env(run_dir, "resume", dev, git)
        stats.write(phase="resumed", session=session, from_step=from_step, overrides=dict(changes), argv=sys.argv)
        log.info("resume %s (session %d) from %s: method=%s preset=%s protocol=%s seed=%d%s", run_dir, session,
                 from_step or "no snapshot", req.method, req.preset, spec.name, req.seed,
                 f", changed {changes}" if changes else "")
        seed_everything(req.seed)
        method = resolved.method_cls(resolved.method_config)
        ctx = FitContext(seed=req.seed, device=dev, progress=req.progress, num_threads=req.num_threads,
                         run_dir=run_dir, stats=stats)
        _fit_score_record(run_dir, req, resolved, method, fit_split, ctx, stats, git)
    return run_dir


def _original_date(run_dir: Path, folder: RunFolder) -> str:
    """The date of the run's records: from ``metrics.json`` if it is readable (it is only read for
    this), else from ``config.json``'s start, else today."""
    with contextlib.suppress(UserError, AttributeError, TypeError, KeyError, IndexError):
        records = read_json_file(run_dir / METRICS_FILE)
        date = records[0]["date"]
        if isinstance(date, str) and date:
            return date
    started = folder.config.get("started")
    if isinstance(started, str) and len(started) >= 10:
        return started[:10]
    return utc_now().date().isoformat()


def variant_slug(options: Mapping[str, str]) -> str:
    """``{"regression": "liu"}`` -> ``regression-liu`` (file-name safe, sorted by key)."""
    return "_".join(f"{k}-{v}" for k, v in sorted(options.items())).replace("/", "-").replace(" ", "-")


def rescore(run_dir: Path, data_root: str | None = None, progress: bool = True, *, batch_size: int | None = None,
            device: str | None = None, trust_run_config: bool = False,
            options: Mapping[str, str] | None = None) -> list[dict]:
    """Re-evaluate a finished run from ``checkpoints/final`` with the recorded settings (records to
    ``metrics_rescored.json`` with today's ``git_hash`` and the run's ``train_git_hash``,
    per-image values to ``scores_per_image_rescored.csv.gz``). ``batch_size``/``device`` replace
    the recorded ones (the records carry the batch size). ``options`` scores another protocol
    variant (e.g. ``{"regression": "liu"}``): its records, whose metric names encode the variant,
    go to ``metrics_variant-<slug>.json`` and ``scores_per_image_variant-<slug>.csv.gz`` instead,
    and ``tables`` reads them beside ``metrics.json``."""
    from segbench.protocols.per_image import PER_IMAGE_RESCORED_FILE

    run_dir = Path(run_dir)
    folder = read_run_folder(run_dir)
    if batch_size is not None:
        check_run_flags(batch_size=batch_size)
    variant = {k: v for k, v in (options or {}).items() if folder.request.options.get(k) != v}
    req = dataclasses.replace(folder.request, progress=progress, options={**folder.request.options, **variant},
                              data_root=data_root if data_root is not None else folder.request.data_root,
                              batch_size=batch_size if batch_size is not None else folder.request.batch_size,
                              device=device if device is not None else folder.request.device)
    final = final_checkpoint_dir(run_dir)
    if not (final / "state.pt").is_file() or not (final / "method_config.json").is_file():
        raise UserError(f"run {run_dir} did not finish (no {final / 'state.pt'}): resume with: "
                        + RESUME_COMMAND.format(run_dir=run_dir))
    resolved = resolve(req)
    saved = read_json_file(final / "method_config.json", "the saved method config")
    check_code_targets(folder, {str(run_dir / CONFIG_FILE): to_jsonable(resolved.method_config),
                                str(final / "method_config.json"): saved}, trust=trust_run_config, command="eval")
    resolve_device(req.device)
    with RunLock(run_dir, "eval"), _session(run_dir, "eval", new=False) as stats:
        t0 = time.perf_counter()
        method = resolved.method_cls.load(final)
        git = git_state()
        context = _context(req, resolved, run_dir.name, git, _original_date(run_dir, folder),
                           train_git_hash=_train_git_label(folder))
        slug = variant_slug(variant)
        records = score(method, resolved, req, context, run_dir=run_dir,
                        per_image_file=f"scores_per_image_variant-{slug}.csv.gz" if variant else PER_IMAGE_RESCORED_FILE)
        write_json_atomic(run_dir / (f"metrics_variant-{slug}.json" if variant else METRICS_RESCORED_FILE), records)
        stats.write(phase="rescored", eval_seconds=time.perf_counter() - t0, git_hash=git_label(git),
                    batch_size=req.batch_size, data_root=req.data_root, argv=sys.argv)
        log.info("eval %s: %s", run_dir, {r["metric"]: r["value"] for r in records})
    return records
