"""Run records: the run directory layout, environment info, append-only training stats and
the tidy long-format metric records (one row per metric value).

Results schema (``SCHEMA_VERSION``); every row of ``metrics.json`` has exactly these fields:

=================  =====================================================================
method             registry name of the method
protocol           registry name of the protocol
protocol_version   the protocol spec's version string
dataset            registry name of the dataset
split              dataset split the metric was computed on
metric             metric name; it encodes the protocol variant (``fg_iou_ganseg``)
value              float
higher_is_better   bool
seed               int, the run's seed
run_id             run directory name (``<timestamp>-s<seed>``)
n_eval             number of images the value was computed on
num_parts          K of the method (number of parts, background excluded)
preset             method preset (paper / quick / smoke)
git_hash           commit of the harness (``-dirty`` suffix for uncommitted changes)
date               ISO date of the run (UTC)
schema_version     ``SCHEMA_VERSION``
=================  =====================================================================
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterable, Mapping


SCHEMA_VERSION = "1"
RECORD_FIELDS = ("method", "protocol", "protocol_version", "dataset", "split", "metric", "value",
                 "higher_is_better", "seed", "run_id", "n_eval", "num_parts", "preset", "git_hash",
                 "date", "schema_version")

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
    """Join protocol scores (metric, split, value, n_eval) with the run context."""
    rows = []
    for score in scores:
        row = {**context, **score, "value": float(score["value"]),
               "higher_is_better": bool(higher_is_better[score["metric"]]),
               "schema_version": SCHEMA_VERSION}
        missing = set(RECORD_FIELDS) - set(row)
        if missing:
            raise ValueError(f"metric record lacks {sorted(missing)}")
        rows.append({k: row[k] for k in RECORD_FIELDS})
    return rows


def file_digest(path: Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file, read in 4 MiB blocks (hashlib.file_digest needs Python 3.11)."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def write_json(path: Path, obj: Any) -> None:
    Path(path).write_text(json.dumps(obj, indent=2, default=str) + "\n")


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())
