"""Foreground IoU on CUB and Flowers, GANSeg Tab.2 (REFERENCE 1.4), K = 8 as in the paper, and
Melas-Kyriazi et al. Table 1's saliency accuracy and max F-beta.

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

Saliency (``saliency_accuracy``, ``saliency_max_fbeta``; Melas-Kyriazi Tab.1 "Acc" and "maxFβ" for
CUB and Flowers, whose "IoU" is ``fg_iou_melas``): on the ``melas`` view whatever ``iou`` is, as the
released code evaluates CUB / Flowers (``config/segment.yaml`` ``crop: True``): the method sees the
centre square crop resized to 128, the foreground probability (1 - background) is upsampled to the
centre-cropped full-resolution mask; accuracy of fg prob > 0.5 and the max over k/255 (k = 1..254)
of the per-image F-beta (beta^2 = 0.3) averaged over images (``protocols.metrics.saliency``).

Only per-image IoUs and running saliency sums are kept across batches, never probability maps.
"""
from __future__ import annotations

from typing import Any, Iterator, Mapping

import numpy as np
import torch
from tqdm import tqdm

from segbench.protocols.metrics.iou import IOU_SIZE, IOU_VARIANTS, fg_iou_ganseg, fg_iou_melas, fg_iou_redo, \
    gt_mask_for_variant, prepare_image, summarise_fg_iou
from segbench.protocols.metrics.saliency import SaliencyAccumulator, foreground_on_grids
from segbench.protocols.spec import MetricSpec, Protocol, ProtocolSpec

FG_NUM_PARTS = 8  # GANSeg Tab.2: "We use K = 8"
FG_IOU_METRIC = MetricSpec("fg_iou_{iou}", True, "test", "", "foreground IoU (argmax not background), variant in name")
SALIENCY_VIEW = "melas"
FG_METRICS = (
    FG_IOU_METRIC,
    MetricSpec("saliency_accuracy", True, "test", "", "melas view: pixel accuracy at fg prob > 0.5, mean over images"),
    MetricSpec("saliency_max_fbeta", True, "test", "",
               "melas view: max over t=k/255 (k=1..254) of the per-image F(beta^2=0.3) averaged over images"),
)


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


def _add_saliency(accumulator: SaliencyAccumulator, part_probs: torch.Tensor, full_masks: list[np.ndarray]) -> None:
    gts = [gt_mask_for_variant(m, SALIENCY_VIEW) for m in full_masks]
    accumulator.update(foreground_on_grids(part_probs, [g.shape for g in gts]), gts)


def foreground_scores(method: Any, split: Any, variant: str, *, batch_size: int,
                      progress: bool) -> tuple[float, dict[str, float], int]:
    """(reported IoU in ``variant``, saliency scores on the melas view, number of images)."""
    saliency = SaliencyAccumulator()
    ious = []
    for images, masks, _ in iou_batches(split, variant, batch_size, progress):
        probs = method.predict(images).part_probs
        ious.append(per_image_iou(variant, probs, masks))
        if variant == SALIENCY_VIEW:  # same view and full-resolution masks: no second pass
            _add_saliency(saliency, probs, masks)
    if variant != SALIENCY_VIEW:
        for images, masks, _ in iou_batches(split, SALIENCY_VIEW, batch_size, progress, desc="saliency"):
            _add_saliency(saliency, method.predict(images).part_probs, masks)
    values = np.concatenate(ious) if ious else np.zeros(0)
    return summarise_fg_iou(variant, values), saliency.compute(), len(values)


class _ForegroundProtocol(Protocol):
    def evaluate(self, method: Any, splits: Mapping[str, Any], *, batch_size: int = 32,
                 progress: bool = True) -> list[dict[str, Any]]:
        variant, split = self.options["iou"], splits["test"]
        iou, saliency, n = foreground_scores(method, split, variant, batch_size=batch_size, progress=progress)
        return [{"metric": f"fg_iou_{variant}", "split": split.name, "value": iou, "n_eval": n},
                {"metric": "saliency_accuracy", "split": split.name, "value": saliency["accuracy"], "n_eval": n},
                {"metric": "saliency_max_fbeta", "split": split.name, "value": saliency["max_fbeta"], "n_eval": n}]


class CubForegroundProtocol(_ForegroundProtocol):
    spec = ProtocolSpec(
        name="cub_fg",
        version="2",
        reproduces="GANSeg Tab.2 CUB foreground IoU (K=8); Melas-Kyriazi Tab.1 CUB saliency accuracy / max F-beta",
        dataset="cub",
        splits={"fit": "train", "test": "test"},
        image_size=IOU_SIZE,
        needs=frozenset({"parts"}),
        num_parts=FG_NUM_PARTS,
        metrics=FG_METRICS,
        options={"iou": IOU_VARIANTS},
        dataset_options={"augment": "ganseg", "annotations": "masks"},
    )


class FlowersForegroundProtocol(_ForegroundProtocol):
    spec = ProtocolSpec(
        name="flowers_fg",
        version="2",
        reproduces="GANSeg Tab.2 Flowers foreground IoU (K=8); Melas-Kyriazi Tab.1 Flowers saliency accuracy / "
                   "max F-beta",
        dataset="flowers",
        splits={"fit": "train", "test": "test"},
        image_size=IOU_SIZE,
        needs=frozenset({"parts"}),
        num_parts=FG_NUM_PARTS,
        metrics=FG_METRICS,
        options={"iou": IOU_VARIANTS},
        dataset_options={"augment": "ganseg"},
    )
