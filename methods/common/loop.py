"""The one training-loop core every loop uses (GAN, DCGAN, segmenter, direction search, ...).

A loop is a ``Snapshot`` (what it must keep to continue: step, modules, optimisers, LR
schedulers, ``torch.Generator`` streams, the global RNG and any extra state) plus a step
function. ``run_steps`` drives it::

    snap = Snapshot("segmenter", ctx.checkpoint_dir("segmenter"), settings, modules={"model": model},
                    optimizers={"opt": opt}, schedulers={"lr": sched}, generators={"pairs": rng})
    resumed = snap.resume(total_steps)          # exact resume, or a one-line error on a mismatch
    report = run_steps(snap, total_steps, step_fn, stats=ctx.stats, progress=ctx.progress,
                       log_every=25, checkpoint_every=500)

``step_fn(step)`` does one optimisation step and returns its scalar terms (tensors or floats).
Every step's terms are checked for finite values on the device (no GPU sync per step); the
check is read at each sync point (stats row, snapshot, end) *before* anything is written, so a
diverging run stops (``TrainingDiverged``, one line naming the stage and the first bad step)
with its last finite snapshot on disk; ``save`` also refuses non-finite weights and buffers. Every ``log_every`` steps a
``stats.jsonl`` row holds the window means of the terms, the throughput (``it_s``) and the peak
memory (``peak_mem_mb``). Schedulers are stepped once per step, after ``step_fn``.

Resuming restores everything the step function draws from, so on CPU a run continued from a
snapshot is bit-identical to one that never stopped.

In a data-parallel run (``methods.common.parallel``) rank 0 reads the snapshot and broadcasts it
(or, on a fresh start, its initial weights), so every rank starts identical; each rank's global
RNG state is saved and restored when the world size is the same; the sync points reduce the
terms over the ranks (rows hold the global means); only rank 0 writes (the other ranks have no
snapshot folder and no stats log).
"""
from __future__ import annotations

import math
import os
import resource
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from segbench.benchmark.errors import UserError
from segbench.methods.common.checkpoint import save_atomic
from segbench.methods.context import resolve_device
from segbench.methods.common.parallel import broadcast_modules, broadcast_object, gather_objects, world

SNAPSHOT_FORMAT = 2
# Test hook: "stage@k" makes step k (1-based) of that stage produce a NaN loss and NaN weights,
# as a real divergence would, so tests can check that a run stops with a finite snapshot.
INJECT_NAN_ENV = "SEGBENCH_INJECT_NAN"
# Test hook: "stage@k" kills this process with SIGKILL right after step k of that stage (after
# any snapshot due at k), as `kill -9` would, so tests can check that --resume is bit-identical.
INJECT_KILL_ENV = "SEGBENCH_INJECT_KILL"


class TrainingDiverged(UserError):
    """A loss became NaN/inf; the message names the stage, the step and the last snapshot."""


def _as_jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _as_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_as_jsonable(v) for v in value]
    return value


def keep_configured_lr(optimizer: torch.optim.Optimizer, lr: float, scheduler: Any = None) -> None:
    """After a snapshot was loaded into ``optimizer`` (and ``scheduler``): run at the configured
    ``lr`` (a resumable field) times the decay the scheduler applied so far, not at the lr the
    snapshot was written with. Nothing changes when the lr is the snapshot's (exact resume)."""
    for group in optimizer.param_groups:
        initial = group.get("initial_lr", group["lr"])
        if initial == lr:
            continue
        group["lr"] = lr * (group["lr"] / initial) if initial else lr
        if "initial_lr" in group:
            group["initial_lr"] = lr
    if scheduler is not None and hasattr(scheduler, "base_lrs"):
        scheduler.base_lrs = [lr for _ in scheduler.base_lrs]



@dataclass
class Snapshot:
    """The resumable state of one training stage, saved to ``folder / f"{stage}.pt"``.

    ``settings`` are the values a snapshot must agree on to be continued (architecture, data
    size, seed, ...); fields that do not change the result (total steps, logging) stay out.
    ``get_extra`` / ``set_extra`` carry loop-specific state (e.g. the rest of a data epoch).
    ``lrs`` (optimiser name -> configured lr): learning rates are resumable fields, so after a
    snapshot is loaded each optimiser runs at its configured lr (times its scheduler's decay).
    ``updater``: the loop's ``precision.Updater`` (its loss scalers are kept).
    """

    stage: str
    folder: Path | None
    settings: Mapping[str, Any]
    modules: Mapping[str, torch.nn.Module]
    optimizers: Mapping[str, torch.optim.Optimizer] = field(default_factory=dict)
    schedulers: Mapping[str, Any] = field(default_factory=dict)
    generators: Mapping[str, torch.Generator] = field(default_factory=dict)
    get_extra: Callable[[], dict[str, Any]] | None = None
    set_extra: Callable[[dict[str, Any]], None] | None = None
    device: torch.device | str | None = None  # where the modules live (None: the CPU)
    lrs: Mapping[str, float] = field(default_factory=dict)
    updater: Any = None
    step: int = 0
    saved_step: int | None = None  # step of the snapshot on disk (None: none yet)

    def __post_init__(self) -> None:
        self.settings = _as_jsonable(dict(self.settings))
        self.device = resolve_device(self.device)

    @property
    def path(self) -> Path | None:
        return Path(self.folder) / f"{self.stage}.pt" if self.folder is not None else None

    def state_dict(self) -> dict[str, Any]:
        state = {"format": SNAPSHOT_FORMAT, "stage": self.stage, "settings": self.settings, "step": self.step,
                 "modules": {k: m.state_dict() for k, m in self.modules.items()},
                 "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
                 "schedulers": {k: s.state_dict() for k, s in self.schedulers.items()},
                 "generators": {k: g.get_state() for k, g in self.generators.items()},
                 **self._rank_rng(), "extra": self.get_extra() if self.get_extra else {}}
        if self.updater is not None:
            state["updater"] = self.updater.state_dict()
        ranks = gather_objects(self._rank_rng())  # a collective: every rank calls state_dict
        if len(ranks) > 1:
            state["rank_rng"] = ranks
        return state

    def _rank_rng(self) -> dict[str, torch.Tensor]:
        rng = {"torch_rng": torch.get_rng_state()}
        if self.device.type == "cuda":
            rng["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        return rng

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        for group, live in (("modules", self.modules), ("optimizers", self.optimizers),
                            ("schedulers", self.schedulers)):
            for k, obj in live.items():
                obj.load_state_dict(state[group][k])
        for k, gen in self.generators.items():
            gen.set_state(state["generators"][k])
        rng = state
        ranks = state.get("rank_rng") or [state]
        if len(ranks) == world().size:  # the same world size: each rank continues its own stream
            rng = ranks[world().rank]
        if world().rank == 0 or len(ranks) == world().size:  # else: keep the rank's fresh seed
            torch.set_rng_state(rng["torch_rng"])
            if self.device.type == "cuda" and "cuda_rng" in rng:
                torch.cuda.set_rng_state(rng["cuda_rng"], self.device)
        if self.updater is not None:
            self.updater.load_state_dict(state.get("updater", {}))
        if self.set_extra:
            self.set_extra(state["extra"])
        for name, lr in self.lrs.items():
            opt = self.optimizers[name]
            keep_configured_lr(opt, lr, next((s for s in self.schedulers.values()
                                              if getattr(s, "optimizer", None) is opt), None))
        self.step = self.saved_step = int(state["step"])

    def read(self) -> dict[str, Any] | None:
        """The snapshot on disk, checked to belong to this run (None when there is none)."""
        path = self.path
        if path is None or not path.is_file():
            return None
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # truncated or foreign file: the user's to remove
            raise UserError(f"{path}: unreadable training snapshot ({type(exc).__name__}); delete it "
                            "to restart this stage") from None
        if not isinstance(state, dict) or state.get("format") != SNAPSHOT_FORMAT or state.get("stage") != self.stage:
            raise UserError(f"{path}: not a {self.stage} snapshot of this segbench version; delete it to "
                            "restart this stage")
        old = state["settings"]
        changed = sorted(k for k in set(old) | set(self.settings) if old.get(k) != self.settings.get(k))
        if changed:
            raise UserError(f"{path} was written by a different {self.stage} run (changed: {', '.join(changed)}); "
                            "delete it or restore those settings")
        return state

    def resume(self, total_steps: int) -> bool:
        """Load the snapshot on disk if there is one; True when training continues from it.
        With several ranks: rank 0 reads and broadcasts it (a fresh start broadcasts rank 0's
        initial modules), so every rank continues from the same state."""
        if world().size > 1:
            state = self._read_on_rank0()
            if state is None:
                broadcast_modules(list(self.modules.values()))
        else:
            state = self.read()
        if state is None:
            return False
        if int(state["step"]) > total_steps:
            raise UserError(f"{self.path} is at step {state['step']}, past the configured {total_steps} steps")
        self.load_state_dict(state)
        return True

    def _read_on_rank0(self) -> dict[str, Any] | None:
        payload: Any = None
        if world().main:
            try:
                payload = ("state", self.read())
            except Exception as exc:  # the other ranks must hear of any failure, or they wait forever
                payload = ("error", str(exc) if isinstance(exc, UserError) else
                           f"{self.path}: unreadable training snapshot ({type(exc).__name__}: {exc})")
        kind, value = broadcast_object(payload)
        if kind == "error":
            raise UserError(value if world().main else f"rank 0 stopped: {value}")
        return value

    def _kept(self) -> str:
        if self.saved_step is None:
            return "no snapshot was written yet"
        where = self.path if self.path is not None else "rank 0's snapshot"
        return f"kept the last finite snapshot {where} (step {self.saved_step})"

    def _first_non_finite(self) -> str | None:
        for name, module in self.modules.items():
            for key, tensor in module.state_dict().items():
                if tensor.is_floating_point() and not torch.isfinite(tensor).all():
                    return f"{name}.{key}"
        return None

    def save(self) -> None:
        """Write atomically; weights that are not finite are never written. Every rank calls it
        (the RNG states are gathered); rank 0 writes."""
        if self.path is None and world().size == 1:
            return
        bad = self._first_non_finite()
        if world().size > 1:  # per-rank buffers (BatchNorm statistics) may differ: decide together
            bad = next((f"{b} (rank {r})" for r, b in enumerate(gather_objects(bad)) if b is not None), None)
        if bad is not None:
            raise TrainingDiverged(f"{self.stage} training diverged: {bad} is not finite at step {self.step}; "
                                   f"{self._kept()}")
        state = self.state_dict()
        if self.path is not None:
            save_atomic(self.path, state)
        self.saved_step = self.step


def _injected_nan_step(stage: str, env: str = INJECT_NAN_ENV) -> int | None:
    hook = os.environ.get(env, "")
    name, _, step = hook.partition("@")
    return int(step) if name == stage and step.isdigit() else None


def _diverged(snap: Snapshot, step: int, bad: list[str]) -> TrainingDiverged:
    return TrainingDiverged(f"{snap.stage} training diverged at step {step}: non-finite {', '.join(bad)}; "
                            f"{snap._kept()}")


class StatsWindow:
    """Per-term sums since the last stats row, kept on the device: adding a step never waits for
    the GPU. Non-finite terms are noted on the device too (the first bad step and which terms);
    ``check`` reads them at the loop's sync points, before any row or snapshot is written."""

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = {}
        self.steps, self.t0 = 0, time.perf_counter()
        self.bad: dict[str, torch.Tensor] = {}  # term -> bool tensor: was it ever non-finite
        self.first_bad: torch.Tensor | None = None  # step (1-based) of the first non-finite term, or 0

    def add(self, step: int, terms: Mapping[str, Any]) -> None:
        self.steps += 1
        for k, v in terms.items():
            v = v.detach().float() if isinstance(v, torch.Tensor) else torch.tensor(float(v))
            finite = torch.isfinite(v)
            self.sums[k] = self.sums[k] + v if k in self.sums else v
            self.counts[k] = self.counts.get(k, 0) + 1
            self.bad[k] = self.bad[k] | ~finite if k in self.bad else ~finite
            first = self.first_bad if self.first_bad is not None else torch.zeros((), dtype=torch.int64,
                                                                                    device=v.device)
            self.first_bad = torch.where((first == 0) & ~finite, torch.full_like(first, step), first)

    def check(self, snap: Snapshot) -> None:
        """Raise ``TrainingDiverged`` if any term was non-finite since the window began, on any
        rank (a sync; with several ranks a collective, so every rank stops together)."""
        first = int(self.first_bad) if self.first_bad is not None else 0
        bad = sorted(k for k, b in self.bad.items() if bool(b))
        if world().size > 1:
            seen = [(f, names) for f, names in gather_objects((first, bad)) if f > 0]
            first = min((f for f, _ in seen), default=0)
            bad = sorted({n for _, names in seen for n in names})
        if first > 0:
            raise _diverged(snap, first, bad)

    def flush(self) -> dict[str, float]:
        """Window means (over the ranks too) and throughput as floats (a sync); starts a new
        window."""
        elapsed = max(time.perf_counter() - self.t0, 1e-9)
        means = {k: float(self.sums[k]) / self.counts[k] for k in self.sums}
        if world().size > 1:
            per_rank = gather_objects(means)
            means = {k: sum(r[k] for r in per_rank) / len(per_rank) for k in means}
        row = {**means, "it_s": self.steps / elapsed}
        self.__init__()
        return row


def memory_row(device: torch.device) -> dict[str, float]:
    """Peak resident set size of this process and, on a GPU, peak CUDA allocation (MiB)."""
    row = {"peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    if device.type == "cuda":
        row["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    row["peak_mem_mb"] = row.get("peak_cuda_mb", row["peak_rss_mb"])
    return row


def run_steps(snap: Snapshot, total_steps: int, step_fn: Callable[[int], Mapping[str, Any]], *,
              log_every: int, checkpoint_every: int = 0, stats: Any = None, progress: bool = True,
              desc: str | None = None, on_log: Callable[[], Mapping[str, Any]] | None = None,
              after_step: Callable[[int], None] | None = None, batch_size: int | None = None) -> dict[str, Any]:
    """Run ``step_fn`` from ``snap.step`` to ``total_steps``; returns the stage's report.

    Per step: ``step_fn(step)`` -> schedulers step -> ``snap.step += 1`` -> the terms join the
    window on the device (no sync) -> at a sync point (a stats row every ``log_every`` steps, a
    snapshot every ``checkpoint_every`` steps (0 = only at the end), the last step) the window is
    checked for non-finite terms first, then the row (plus ``on_log()``'s extra values) and the
    snapshot are written -> ``after_step(step)``.
    """
    from tqdm import tqdm

    if log_every < 1 or checkpoint_every < 0:
        raise UserError(f"{snap.stage}: log_every must be >= 1 and checkpoint_every >= 0")
    start, t_start = snap.step, time.perf_counter()
    window = StatsWindow()
    bar = tqdm(total=total_steps, initial=start, desc=desc or snap.stage, disable=not progress,
               dynamic_ncols=True)
    try:
        while snap.step < total_steps:
            terms = step_fn(snap.step)
            if _injected_nan_step(snap.stage) == snap.step + 1:  # the test hook: what a real NaN does
                terms = {k: math.nan for k in terms} or {"loss": math.nan}
                with torch.no_grad():
                    next(p for m in snap.modules.values() for p in m.parameters()).fill_(math.nan)
            for scheduler in snap.schedulers.values():
                scheduler.step()
            snap.step += 1
            window.add(snap.step, terms)
            bar.update(1)
            log_now = snap.step % log_every == 0 or snap.step == total_steps
            save_now = (checkpoint_every and snap.step % checkpoint_every == 0) or snap.step == total_steps
            if log_now or save_now:  # sync points: nothing is written before the finite check
                window.check(snap)
            if log_now:
                row = {"phase": snap.stage, "step": snap.step, **window.flush()}
                if batch_size:
                    row["images_s"] = row["it_s"] * batch_size
                row.update(world_size=world().size, **memory_row(snap.device), **(on_log() if on_log else {}))
                if stats is not None:
                    stats.write(**row)
                bar.set_postfix({k: f"{row[k]:.3f}" for k in terms if k in row}, refresh=False)
            if save_now:
                snap.save()
            if after_step is not None:
                after_step(snap.step)
            if _injected_nan_step(snap.stage, INJECT_KILL_ENV) == snap.step:
                os.kill(os.getpid(), signal.SIGKILL)
    finally:
        bar.close()
    seconds = time.perf_counter() - t_start
    done = snap.step - start
    return {"steps": snap.step, "steps_this_call": done, "resumed_from_step": start if start else None,
            "seconds": round(seconds, 3), "it_s": done / seconds if done and seconds > 0 else None,
            "device": str(snap.device), "world_size": world().size,
            "images_s": done * batch_size / seconds if batch_size and done and seconds > 0 else None}
