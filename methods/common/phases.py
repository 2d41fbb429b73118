"""Per-phase timing of a training step, for the ``bench`` command (off in every normal run).

A loop marks its phases; without a profiler the marks cost nothing::

    def step(i):
        phase = ctx.phases(i)
        with phase("d_fake"):
            ...

``PhaseProfiler`` records, per (step, phase): wall seconds, process CPU seconds (all threads:
comparable on a shared machine) and, with ``count_flops=True``, the FLOPs the phase ran (forward
and backward matmuls and convolutions, counted by torch's FLOP formulas in
``torch.utils.flop_counter.flop_registry``). The counter is a bare dispatch mode: torch's
``FlopCounterMode`` also tracks modules with hooks that break ``autograd.grad`` on leaf inputs
(the gradient penalty). On a GPU each mark synchronises the device, so phase times are exact but the
step is slower than unprofiled: compare totals with an unprofiled run.
"""
from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from typing import Any, Callable, ContextManager, Iterator

import torch


@contextlib.contextmanager
def _nothing() -> Iterator[None]:
    yield


def no_phases(_: str) -> ContextManager[None]:
    return _nothing()


class FlopCount:
    """A dispatch mode summing the FLOPs of the ops torch has formulas for (mm, conv, ...)."""

    def __init__(self) -> None:
        from torch.utils._python_dispatch import TorchDispatchMode
        from torch.utils.flop_counter import flop_registry

        counter = self

        class _Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
                kwargs = kwargs or {}
                out = func(*args, **kwargs)
                formula = flop_registry.get(func._overloadpacket)
                if formula is not None:
                    counter.total += int(formula(*args, **kwargs, out_val=out))
                return out

        self.total = 0
        self.mode = _Mode()

    def __enter__(self) -> "FlopCount":
        self.mode.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.mode.__exit__(*exc)

    def get_total_flops(self) -> int:
        return self.total


class PhaseProfiler:
    """Wall/CPU seconds and FLOPs per (step, phase); see the module docstring."""

    def __init__(self, device: torch.device | None = None, count_flops: bool = False) -> None:
        self.device = device
        self.records: list[dict[str, Any]] = []
        self.flop_mode = None
        if count_flops:
            self.flop_mode = FlopCount()

    @contextlib.contextmanager
    def active(self) -> Iterator["PhaseProfiler"]:
        """The block in which phases are counted (enters the FLOP counter, if any)."""
        with self.flop_mode if self.flop_mode is not None else _nothing():
            yield self

    def _sync(self) -> None:
        if self.device is not None and self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _flops(self) -> int:
        return int(self.flop_mode.get_total_flops()) if self.flop_mode is not None else 0

    def bind(self, step: int) -> Callable[[str], ContextManager[None]]:
        @contextlib.contextmanager
        def phase(name: str) -> Iterator[None]:
            self._sync()
            t0, c0, f0 = time.perf_counter(), time.process_time(), self._flops()
            yield
            self._sync()
            self.records.append({"step": step, "phase": name, "seconds": time.perf_counter() - t0,
                                 "cpu_seconds": time.process_time() - c0,
                                 "flops": self._flops() - f0 if self.flop_mode is not None else None})
        return phase

    def by_step(self) -> dict[int, dict[str, dict[str, float]]]:
        """{step: {phase: {"seconds", "cpu_seconds", "flops"}}} (a phase met twice in a step adds)."""
        out: dict[int, dict[str, dict[str, float]]] = defaultdict(dict)
        for r in self.records:
            cell = out[r["step"]].setdefault(r["phase"], {"seconds": 0.0, "cpu_seconds": 0.0, "flops": 0})
            cell["seconds"] += r["seconds"]
            cell["cpu_seconds"] += r["cpu_seconds"]
            cell["flops"] = None if r["flops"] is None or cell["flops"] is None else cell["flops"] + r["flops"]
        return dict(out)
