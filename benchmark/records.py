"""Run records: the run directory layout, environment info, append-only training stats and
the tidy long-format metric records (one row per metric value).

Results schema (``SCHEMA_VERSION`` = 2); every row of ``metrics.json`` has exactly these fields:

=================  =====================================================================
method             registry name of the method
protocol           registry name of the protocol
protocol_version   the protocol spec's version string
dataset            registry name of the dataset
split              dataset split the metric was computed on
metric             metric name; it encodes the protocol variant (``fg_iou_ganseg``)
value              float (finite; ``tables`` leaves out a run holding NaN or inf)
higher_is_better   bool
seed               int, the run's seed
run_id             run directory name (``<timestamp>-s<seed>``)
n_eval             number of images the value was computed on
num_parts          K of the method (number of parts, background excluded)
preset             method preset (paper / quick / smoke)
limit              int or null: the ``--limit`` (images per split) the value was scored with;
                   null for a full run. ``tables`` never averages limited runs with full ones
batch_size         int: the ``--batch-size`` of scoring. No value depends on it: the protocols
                   score image by image, and FID draws its samples in fixed chunks
                   (``protocols/fid.py``, protocol version 2)
git_hash           commit of the code that computed THIS value (``-dirty`` suffix for
                   uncommitted changes): ``eval`` of an old run writes today's commit
train_git_hash     commit of the code that trained the model (same spelling); equals
                   ``git_hash`` for a value scored by the run that trained it
date               ISO date of the run (UTC)
schema_version     ``SCHEMA_VERSION``
=================  =====================================================================

Schema 1 (before ``limit``, ``batch_size`` and ``train_git_hash``) is still read
(:func:`validate_record`): ``limit`` and ``batch_size`` become null (not recorded; a schema-1
FID value depended on the batch size), ``train_git_hash`` becomes ``git_hash``.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import numbers
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterable, Mapping


SCHEMA_VERSION = "2"
RECORD_FIELDS = ("method", "protocol", "protocol_version", "dataset", "split", "metric", "value",
                 "higher_is_better", "seed", "run_id", "n_eval", "num_parts", "preset", "limit", "batch_size",
                 "git_hash", "train_git_hash", "date", "schema_version")
# Schema 1 lacked these; validate_record fills them from the record (train_git_hash = git_hash).
SCHEMA_2_FIELDS = ("limit", "batch_size", "train_git_hash")
READABLE_SCHEMAS = ("1", SCHEMA_VERSION)

REPO_ROOT = Path(__file__).resolve().parents[1]


def git_state(repo: Path = REPO_ROOT) -> dict[str, Any]:
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True,
                              timeout=10).stdout.strip()
    try:
        commit = git("rev-parse", "HEAD") or "unknown"
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        commit, dirty = "unknown", False
    return {"commit": commit, "dirty": dirty}


def git_label(state: Mapping[str, Any]) -> str:
    return state["commit"][:12] + ("-dirty" if state["dirty"] else "")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def env_info() -> dict[str, Any]:
    import numpy
    import torch
    import torchvision

    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] \
        if torch.cuda.is_available() else []
    return {
        "git": git_state(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": numpy.__version__,
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpus": gpus,
        "hostname": platform.node(),
    }


def utc_now() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


def new_run_dir(out: Path, protocol: str, method: str, seed: int) -> Path:
    stamp = utc_now().strftime("%Y%m%d-%H%M%S-%f")
    run_dir = Path(out) / protocol / method / f"{stamp}-s{seed}"
    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=False)
    (run_dir / "figures").mkdir()
    return run_dir


def device_info(device: Any) -> dict[str, Any]:
    """The device a run fitted on, for ``env.json`` (``--device``, resolved)."""
    import torch

    info: dict[str, Any] = {"device": str(device)}
    if getattr(device, "type", "") == "cuda":
        info["name"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    return info


def metric_records(scores: Iterable[Mapping[str, Any]], *, context: Mapping[str, Any],
                   higher_is_better: Mapping[str, bool]) -> list[dict[str, Any]]:
    """Join protocol scores (metric, split, value, n_eval) with the run context.

    ``context`` holds every other field of :data:`RECORD_FIELDS` (``limit``, ``batch_size``,
    ``git_hash`` of the scoring code and ``train_git_hash`` included); a missing or mistyped one
    is a ``ValueError``."""
    rows = []
    for score in scores:
        row = {**context, **score, "value": float(score["value"]),
               "higher_is_better": bool(higher_is_better[score["metric"]]),
               "schema_version": SCHEMA_VERSION}
        missing = set(RECORD_FIELDS) - set(row)
        if missing:
            raise ValueError(f"metric record lacks {sorted(missing)}")
        rows.append(validate_record({k: row[k] for k in RECORD_FIELDS}))
    return rows


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)  # numpy integers too


def _check(ok: bool, field: str, value: Any, expected: str) -> None:
    if not ok:
        raise ValueError(f"field {field!r} is {value!r}, expected {expected}")


def validate_record(record: Any) -> dict[str, Any]:
    """One ``metrics.json`` row, checked and returned as a schema-2 dict (fields in
    :data:`RECORD_FIELDS` order; a schema-1 row gets ``limit``/``batch_size`` null and
    ``train_git_hash`` = ``git_hash``). Raises ``ValueError`` naming the first problem. A NaN or
    infinite ``value`` passes: whether to keep it is the reader's decision."""
    if not isinstance(record, Mapping):
        raise ValueError(f"a record is {type(record).__name__}, expected an object")
    version = record.get("schema_version")
    if version not in READABLE_SCHEMAS:
        raise ValueError(f"schema_version {version!r}, readable: {', '.join(READABLE_SCHEMAS)}")
    row = dict(record)
    if version == "1":
        for field in SCHEMA_2_FIELDS:
            row.pop(field, None)
        row.update(limit=None, batch_size=None, train_git_hash=row.get("git_hash"))
    missing = [f for f in RECORD_FIELDS if f not in row]
    if missing:
        raise ValueError(f"schema {version} record lacks {missing}")
    for field in ("method", "protocol", "dataset", "split", "metric", "run_id", "preset", "git_hash",
                  "train_git_hash", "date"):
        _check(isinstance(row[field], str) and (row[field] != "" or field in ("run_id", "date")), field,
               row[field], "a string")
    _check(isinstance(row["protocol_version"], str) or _is_int(row["protocol_version"]), "protocol_version",
           row["protocol_version"], "a string")
    row["protocol_version"] = str(row["protocol_version"])
    _check(isinstance(row["value"], numbers.Real) and not isinstance(row["value"], bool), "value", row["value"],
           "a number")
    row["value"] = float(row["value"])
    _check(isinstance(row["higher_is_better"], bool), "higher_is_better", row["higher_is_better"], "true or false")
    _check(_is_int(row["seed"]), "seed", row["seed"], "an integer")
    _check(_is_int(row["n_eval"]) and row["n_eval"] >= 0, "n_eval", row["n_eval"], "an integer >= 0")
    _check(_is_int(row["num_parts"]) and row["num_parts"] >= 0, "num_parts", row["num_parts"], "an integer >= 0")
    _check(row["limit"] is None or (_is_int(row["limit"]) and row["limit"] >= 1), "limit", row["limit"],
           "null or an integer >= 1")
    _check(row["batch_size"] is None and version == "1" or _is_int(row["batch_size"]) and row["batch_size"] >= 1,
           "batch_size", row["batch_size"], "an integer >= 1")
    for field in ("seed", "n_eval", "num_parts", "limit", "batch_size"):
        if row[field] is not None:
            row[field] = int(row[field])
    return {k: row[k] for k in RECORD_FIELDS}


def file_digest(path: Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file, read in 4 MiB blocks (hashlib.file_digest needs Python 3.11)."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())
