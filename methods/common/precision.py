"""How a training loop turns a loss into an optimiser step: mixed precision and data parallelism.

    updater = Updater(config.amp, device)
    with updater.autocast():
        loss = criterion(model(x), y)
    updater.step(loss, optimizer, "opt")      # zero_grad, backward, average over ranks, step

``amp`` (a config field of every trained method, ``--set amp=...``; recorded with the config):

- ``off``: fp32, the papers' setting and every ``paper`` preset's default.
- ``bf16``: ``torch.autocast`` with bfloat16 (CUDA, or CPU autocast); no loss scaling.
- ``fp16``: autocast with float16 and a ``GradScaler`` per optimiser; a step whose scaled
  gradients overflow is skipped (the scaler's standard rule) and the scale lowered.

Losses are computed from float32 logits (callers ``.float()`` them) and gradient penalties run
outside autocast (``autocast(enabled=False)``), so only the networks' bulk runs in 16 bits. The
scalers' state is part of the loop's snapshot (``Snapshot(updater=...)``).

In a data-parallel run (``methods.common.parallel``) the gradients are averaged over the ranks
after the backward pass and before any overflow check, so every rank takes the same decision.
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator, Mapping

import torch

from segbench.methods.common.parallel import average_gradients

AMP_MODES = ("off", "bf16", "fp16")
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class Updater:
    """Autocast, loss scaling and gradient averaging for one loop (see the module docstring)."""

    def __init__(self, amp: str, device: torch.device | str) -> None:
        if amp not in AMP_MODES:
            raise ValueError(f"amp must be one of {AMP_MODES}, got {amp!r}")
        self.amp, self.device = amp, torch.device(device)
        self.dtype = AMP_DTYPES.get(amp)
        self.scalers: dict[str, torch.amp.GradScaler] = {}

    @contextlib.contextmanager
    def autocast(self, enabled: bool = True) -> Iterator[None]:
        """Autocast at ``amp``'s dtype (nothing with ``amp=off``); ``enabled=False`` runs the block
        in fp32 even inside an outer autocast (gradient penalties)."""
        if self.dtype is None:
            yield
            return
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=enabled):
            yield

    def _scaler(self, name: str) -> torch.amp.GradScaler:
        if name not in self.scalers:
            self.scalers[name] = torch.amp.GradScaler(self.device.type)
        return self.scalers[name]

    def step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer, name: str = "opt") -> None:
        """zero_grad, backward, average the gradients over the ranks, optimiser step (through the
        ``name``d scaler with fp16)."""
        optimizer.zero_grad(set_to_none=True)
        if self.amp != "fp16":
            loss.backward()
            average_gradients(optimizer)
            optimizer.step()
            return
        scaler = self._scaler(name)
        scaler.scale(loss).backward()
        average_gradients(optimizer)
        scaler.step(optimizer)
        scaler.update()

    def state_dict(self) -> dict[str, Any]:
        return {"amp": self.amp, "scalers": {k: s.state_dict() for k, s in self.scalers.items()}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        for name, scaler_state in state.get("scalers", {}).items():
            self._scaler(name).load_state_dict(scaler_state)

    def describe(self) -> dict[str, Any]:
        scales = {k: float(s.get_scale()) for k, s in self.scalers.items()}
        return {"amp": self.amp, **({"loss_scale": scales} if scales else {})}
