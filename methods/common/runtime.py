"""Process settings shared by the methods' training and inference code."""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run with ``n`` torch CPU threads (0 = unchanged), restoring the previous setting.

    Tiny networks on a busy 2-core machine run faster on one thread than on contended ones."""
    before = torch.get_num_threads()
    if n > 0:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
