"""Shared evaluation loop: run a method over a split batch by batch and hand each batch's
predictions to the protocol's accumulators (sufficient statistics, never whole arrays of
probabilities)."""
from __future__ import annotations

from typing import Any, Callable, Iterator

import numpy as np
from tqdm import tqdm


def predicted_batches(method: Any, split: Any, batch_size: int, progress: bool,
                      desc: str) -> Iterator[tuple[dict[str, Any], np.ndarray]]:
    """Yield (batch, part_probs as numpy [B, K+1, H, W]) over ``split`` in index order."""
    total = (len(split) + batch_size - 1) // batch_size
    for batch in tqdm(split.batches(batch_size), total=total, desc=desc, unit="batch",
                      disable=not progress, leave=False):
        yield batch, method.predict(batch["images"]).part_probs.numpy()


def for_each_batch(method: Any, split: Any, batch_size: int, progress: bool, desc: str,
                   update: Callable[[dict[str, Any], np.ndarray], None]) -> int:
    n = 0
    for batch, probs in predicted_batches(method, split, batch_size, progress, desc):
        update(batch, probs)
        n += len(probs)
    return n
