"""Conversions shared by the metric modules: every metric accepts torch tensors (any device,
with or without grad) or numpy arrays and computes in float64 numpy unless it needs torch ops."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch


def to_numpy(x: Any, dtype: Any = None) -> np.ndarray:
    """Torch tensor or array-like -> numpy array (detached, on the CPU), optionally cast."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    return x.astype(dtype, copy=False) if dtype is not None else x


def to_torch(x: Any, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Torch tensor or array-like -> CPU torch tensor of ``dtype`` (float64 keeps metrics exact)."""
    if isinstance(x, torch.Tensor):
        return x.detach().to(device="cpu", dtype=dtype)
    return torch.as_tensor(np.asarray(x), dtype=dtype)
