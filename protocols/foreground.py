"""Foreground IoU on CUB and Flowers, GANSeg Tab.2 (REFERENCE 1.4), K = 8 as in the paper.

The method fits on ``train`` (with GANSeg's augmentation: 3x repeat, flip, RandomResizedCrop
0.9-1, dataset option ``augment=ganseg``) and is scored on ``test``. Option ``iou`` picks the
reference variant and is part of the metric name ``fg_iou_{iou}``:

- ``ganseg`` (default): the method sees ``split.image(i)`` (the whole image resized to 128 with PIL
  bilinear, as GANSeg's preprocessing; the resized cache when ``prepare`` built one); the GT is the
  dataset's ``fg_mask`` made in GANSeg's order (mask resized to 128 then thresholded; Flowers: the
  colour rule on the resized segmim), passed to ``fg_iou_ganseg`` (which resizes 128 -> 128, the
  identity, then > 0.5); plain mean over images.
- ``redo`` / ``melas``: the method sees ``prepare_image(full_image, variant)``; the metric function
  gets the full-resolution ``full_fg_mask`` and builds its own GT view; ``summarise_fg_iou``
  aggregates (mean of per-batch means for redo).

Only per-image IoUs are kept across batches, never probability maps.
"""
from __future__ import annotations

from typing import Any, Iterator, Mapping

import numpy as np
import torch
from tqdm import tqdm

from protocols.metrics.iou import IOU_SIZE, IOU_VARIANTS, fg_iou_ganseg, fg_iou_melas, fg_iou_redo, prepare_image, \
    summarise_fg_iou
from protocols.spec import MetricSpec, Protocol, ProtocolSpec

FG_NUM_PARTS = 8  # GANSeg Tab.2: "We use K = 8"
FG_IOU_METRIC = MetricSpec("fg_iou_{iou}", True, "test", "", "foreground IoU (argmax not background), variant in name")


def iou_batches(split: Any, variant: str, batch_size: int, progress: bool = False,
                desc: str = "test") -> Iterator[tuple[torch.Tensor, list[np.ndarray], dict[str, Any] | None]]:
    """(images [B, 3, S, S] the method must segment, GT masks for the variant's metric function,
    the ``split.batches`` batch for ganseg or None) over ``split`` in index order."""
    total = (len(split) + batch_size - 1) // batch_size
    if variant == "ganseg":
        for batch in tqdm(split.batches(batch_size), total=total, desc=desc, unit="batch", disable=not progress,
                          leave=False):
            yield batch["images"], list(batch["fg_mask"]), batch
        return
    size = split.image(0).shape[0] if len(split) else IOU_SIZE
    for start in tqdm(range(0, len(split), batch_size), total=total, desc=desc, unit="batch", disable=not progress,
                      leave=False):
        indices = range(start, min(start + batch_size, len(split)))
        images = torch.stack([prepare_image(split.full_image(i), variant, size) for i in indices])
        yield images, [split.full_fg_mask(i) for i in indices], None


def per_image_iou(variant: str, part_probs: torch.Tensor, gt_masks: list[np.ndarray]) -> np.ndarray:
    size = part_probs.shape[-1]
    if variant == "ganseg":
        return fg_iou_ganseg(part_probs, gt_masks, size)
    if variant == "redo":
        return fg_iou_redo(part_probs, gt_masks, size)
    return fg_iou_melas(part_probs, gt_masks)


def foreground_iou(method: Any, split: Any, variant: str, *, batch_size: int, progress: bool) -> tuple[float, int]:
    """(reported IoU, number of images) of ``method`` on ``split`` in ``variant``."""
    ious = [per_image_iou(variant, method.predict(images).part_probs, masks)
            for images, masks, _ in iou_batches(split, variant, batch_size, progress)]
    values = np.concatenate(ious) if ious else np.zeros(0)
    return summarise_fg_iou(variant, values), len(values)


class _ForegroundProtocol(Protocol):
    def evaluate(self, method: Any, splits: Mapping[str, Any], *, batch_size: int = 32,
                 progress: bool = True) -> list[dict[str, Any]]:
        variant, split = self.options["iou"], splits["test"]
        value, n = foreground_iou(method, split, variant, batch_size=batch_size, progress=progress)
        return [{"metric": f"fg_iou_{variant}", "split": split.name, "value": value, "n_eval": n}]


class CubForegroundProtocol(_ForegroundProtocol):
    spec = ProtocolSpec(
        name="cub_fg",
        version="1",
        reproduces="GANSeg Tab.2 CUB foreground IoU (K=8)",
        dataset="cub",
        splits={"fit": "train", "test": "test"},
        image_size=IOU_SIZE,
        needs=frozenset({"parts"}),
        num_parts=FG_NUM_PARTS,
        metrics=(FG_IOU_METRIC,),
        options={"iou": IOU_VARIANTS},
        dataset_options={"augment": "ganseg", "annotations": "masks"},
    )


class FlowersForegroundProtocol(_ForegroundProtocol):
    spec = ProtocolSpec(
        name="flowers_fg",
        version="1",
        reproduces="GANSeg Tab.2 Flowers foreground IoU (K=8)",
        dataset="flowers",
        splits={"fit": "train", "test": "test"},
        image_size=IOU_SIZE,
        needs=frozenset({"parts"}),
        num_parts=FG_NUM_PARTS,
        metrics=(FG_IOU_METRIC,),
        options={"iou": IOU_VARIANTS},
        dataset_options={"augment": "ganseg"},
    )
