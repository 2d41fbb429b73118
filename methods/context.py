"""What ``Method.fit`` is given besides the images: ``FitContext``.

The runner owns the run folder; a method never builds paths into it. It asks the context for
named places instead, so every method shares one layout (the README's run-folder table)::

    <run>/checkpoints/final/              Method.save / Method.load (the fitted method)
    <run>/checkpoints/training/<stage>/   resumable training snapshots, one folder per stage
    <run>/figures/                        figures a method draws while fitting
    <run>/stats.jsonl                     append-only training statistics (ctx.stats)
    <run>/fit_info.json                   what fit reports about itself (ctx.save_info)

and the context carries the device (``--device``), the seed, the progress switch, the CPU
thread count and the run's one ``StatsLog``.
"""
from __future__ import annotations

import contextlib
import itertools
import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from segbench.benchmark.errors import UserError

# The layout above, as names (one place; nothing else spells these folders).
CHECKPOINTS = "checkpoints"
FINAL = "final"
TRAINING = "training"
FIGURES = "figures"
STATS = "stats.jsonl"
FIT_INFO = "fit_info.json"


def final_checkpoint_dir(run_dir: Path) -> Path:
    """Where a run keeps its fitted method (what ``eval`` and other methods load)."""
    return Path(run_dir) / CHECKPOINTS / FINAL


_TMP_COUNTER = itertools.count()


def write_json_atomic(path: Path, obj: Any) -> None:
    """JSON through a unique temporary name beside ``path`` and ``os.replace``: a reader never
    sees half a file, and two writers never share a temporary file (the name holds the process,
    the thread and a counter, and is opened exclusively). The temporary file is removed if the
    write fails."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(obj, indent=2, default=str) + "\n"
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.{next(_TMP_COUNTER)}.tmp")
    try:
        with open(tmp, "x") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


class StatsLog:
    """Append-only ``stats.jsonl``: one JSON object per line, with wall time since start.

    One per run, opened by the runner and handed to the method through ``FitContext.stats``;
    each ``write`` appends whole lines, so concurrent readers see complete rows.

    Rows the runner writes besides the loops' ``{"phase": <stage>, "step": n, ...}`` rows:

    - ``{"phase": "resumed", "session": s, "from_step": {stage: step, ...}, ...}`` when
      ``run --resume`` continues the run (``session`` 2, 3, ...; ``from_step``: the step of each
      stage's training snapshot on disk, i.e. where that stage continues). Rows of a stage with
      ``step > from_step[stage]`` written *before* this marker came from the interrupted process
      after its last snapshot: that work was lost and is redone, so the same steps appear again
      after the marker. Read the file with :func:`read_stats`, which drops those superseded rows.
    - ``{"phase": "error", "error": <one line>, "type": <exception class>, "command": ...}`` when
      a command stops on an error or Ctrl-C (``type`` ``KeyboardInterrupt``).
    - ``fit_done``, ``eval_done`` (a run) and ``rescored`` (an ``eval``).
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._t0 = time.perf_counter()

    def write(self, **stats: Any) -> None:
        row = {"time_s": round(time.perf_counter() - self._t0, 3), **stats}
        with self.path.open("a") as fh:
            fh.write(json.dumps(row, sort_keys=True, default=float) + "\n")


def read_stats(path: Path) -> list[dict[str, Any]]:
    """The rows of a ``stats.jsonl``, without the rows a resume superseded: for each
    ``{"phase": "resumed", "from_step": {stage: step}}`` marker, the earlier rows of that stage
    with a larger step (training after the stage's last snapshot, lost with the interrupted
    process and redone after the marker) are dropped. A line that is not JSON (a process killed
    mid-write) is skipped."""
    rows: list[dict[str, Any]] = []
    for line in Path(path).read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(row, dict):
            continue
        if row.get("phase") == "resumed" and isinstance(row.get("from_step"), dict):
            resumed_at = {k: v for k, v in row["from_step"].items() if isinstance(v, int)}
            rows = [r for r in rows if not (r.get("phase") in resumed_at and isinstance(r.get("step"), int)
                                            and r["step"] > resumed_at[r["phase"]])]
        rows.append(row)
    return rows


def resolve_device(name: str | torch.device | None) -> torch.device:
    """``auto`` (CUDA when present, else CPU), ``cpu``, ``cuda`` or ``cuda:N``; a CUDA device
    that is not there is the user's to fix (one line, exit 2). ``None`` (a default left
    unset): the CPU."""
    if isinstance(name, torch.device):
        return name
    if name is None:
        return torch.device("cpu")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"--device {name}: expected auto, cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise UserError(f"--device {name}: expected auto, cpu, cuda or cuda:N")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"--device {name}: no CUDA device is available here")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s)")
    return device


def to_device(batch: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A CPU batch on ``device``: through pinned memory and a non-blocking copy for a GPU (the
    copy overlaps the host's next work), unchanged on the CPU. Loops call it once per batch."""
    if device.type == "cuda" and batch.device.type == "cpu":
        return batch.pin_memory().to(device, non_blocking=True)
    return batch.to(device)


@dataclass
class FitContext:
    """Everything ``fit`` needs from the run, and the only way into the run folder.

    ``run_dir`` is the runner's; methods use ``checkpoint_dir(stage)``, ``figures_dir``,
    ``stats`` and ``save_info``. A context without a ``run_dir`` (tests, notebooks) keeps
    nothing on disk: ``checkpoint_dir`` returns None and training is not resumable.
    """

    seed: int = 0
    device: torch.device | str | None = None  # None: the CPU (resolve_device)
    progress: bool = True
    num_threads: int = 0  # torch CPU threads during fit (0 = leave the process setting)
    run_dir: Path | None = None
    stats: StatsLog | None = None
    profiler: Any = None  # a methods.common.phases.PhaseProfiler (the bench command); None in runs

    def __post_init__(self) -> None:
        self.device = resolve_device(self.device)
        if self.run_dir is not None:
            self.run_dir = Path(self.run_dir)
            if self.stats is None:
                self.stats = StatsLog(self.run_dir / STATS)

    def checkpoint_dir(self, stage: str) -> Path | None:
        """The folder for the resumable snapshots of training stage ``stage`` (created)."""
        if self.run_dir is None:
            return None
        if not stage or "/" in stage or stage.startswith("."):
            raise ValueError(f"stage must be a plain folder name, got {stage!r}")
        path = self.run_dir / CHECKPOINTS / TRAINING / stage
        path.mkdir(parents=True, exist_ok=True)
        return path

    @property
    def figures_dir(self) -> Path | None:
        if self.run_dir is None:
            return None
        path = self.run_dir / FIGURES
        path.mkdir(parents=True, exist_ok=True)
        return path

    def phases(self, step: int) -> Any:
        """The phase marker of training step ``step`` (``with phase("name"): ...``): timing for
        the bench command's profiler, nothing otherwise."""
        from segbench.methods.common.phases import no_phases

        return self.profiler.bind(step) if self.profiler is not None else no_phases

    def log(self, **row: Any) -> None:
        """One row into the run's ``stats.jsonl`` (nothing without a run)."""
        if self.stats is not None:
            self.stats.write(**row)

    def save_info(self, info: dict[str, Any]) -> None:
        """``fit_info.json``: what fit reports about itself (steps, sizes, provenance)."""
        if self.run_dir is not None:
            write_json_atomic(self.run_dir / FIT_INFO, info)

    def describe(self) -> dict[str, Any]:
        """For the run record."""
        from segbench.methods.common.parallel import world

        return {"device": str(self.device), "seed": self.seed, "num_threads": self.num_threads,
                **world().describe()}
