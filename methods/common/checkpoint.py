"""Atomic checkpoint writes shared by every training loop (GAN, DCGAN, segmenter)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch


def save_atomic(path: Path, payload: dict[str, Any]) -> None:
    """torch.save to ``path`` through a temporary file: a kill mid-save leaves the previous checkpoint intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)
