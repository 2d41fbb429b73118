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
Per-image values come with ``fg_iou_ganseg`` / ``fg_iou_melas`` and ``saliency_accuracy`` (plain means
over images); ``fg_iou_redo`` (mean of batch means) and ``saliency_max_fbeta`` (a max over thresholds
after averaging) have none.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import torch

from segbench.protocols.evaluation import batch_ranges, image_ids
from segbench.protocols.metrics.iou import IOU_SIZE, IOU_VARIANTS, PLAIN_MEAN_VARIANTS, fg_iou, gt_mask_for_variant, \
    prepare_image, summarise_fg_iou
from segbench.protocols.metrics.saliency import SaliencyAccumulator, foreground_on_grids
from segbench.protocols.spec import MetricSpec, MetricValue, PerImage, Protocol, ProtocolSpec

FG_NUM_PARTS = 8  # GANSeg Tab.2: "We use K = 8"
FG_IOU_METRIC = MetricSpec("fg_iou_{iou}", True, "test", "", "foreground IoU (argmax not background), variant in name",
                           key="fg_iou")
SALIENCY_VIEW = "melas"
FG_METRICS = (
    FG_IOU_METRIC,
    MetricSpec("saliency_accuracy", True, "test", "", "melas view: pixel accuracy at fg prob > 0.5, mean over images",
               key="accuracy"),
    MetricSpec("saliency_max_fbeta", True, "test", "",
               "melas view: max over t=k/255 (k=1..254) of the per-image F(beta^2=0.3) averaged over images",
               key="max_fbeta"),
)


def fg_iou_value(variant: str, per_image: np.ndarray, ids: Sequence[str]) -> MetricValue:
    """The reported IoU of ``variant``, with its per-image values when it is their plain mean."""
    value = summarise_fg_iou(variant, per_image)
    return PerImage(value, ids, per_image) if variant in PLAIN_MEAN_VARIANTS else value


def iou_view(split: Any, variant: str, indices: range, size: int) -> tuple[torch.Tensor, list[np.ndarray]]:
    """(images [B, 3, S, S] the method must segment, GT masks as ``fg_iou`` takes them for the
    variant) of the items ``indices``: ganseg the split's own images and ``fg_mask``, the other
    variants views of ``full_image`` and the full-resolution ``full_fg_mask``."""
    if variant == "ganseg":
        batch = split.batch(indices)
        return batch["images"], list(batch["fg_mask"])
    images = torch.stack([prepare_image(split.full_image(i), variant, size) for i in indices])
    return images, [split.full_fg_mask(i) for i in indices]


def _add_saliency(accumulator: SaliencyAccumulator, part_probs: torch.Tensor, full_masks: list[np.ndarray]) -> None:
    gts = [gt_mask_for_variant(m, SALIENCY_VIEW) for m in full_masks]
    accumulator.update(foreground_on_grids(part_probs, [g.shape for g in gts]), gts)


def foreground_scores(method: Any, split: Any, variant: str, *, batch_size: int,
                      progress: bool) -> tuple[np.ndarray, SaliencyAccumulator]:
    """(per-image IoUs in ``variant``, the saliency scores on the melas view) over ``split``."""
    size = split.image(0).shape[0] if len(split) else IOU_SIZE
    saliency, ious = SaliencyAccumulator(), []
    for indices in batch_ranges(len(split), batch_size, progress=progress, desc="test"):
        images, masks = iou_view(split, variant, indices, size)
        probs = method.predict(images).part_probs
        ious.append(fg_iou(variant, probs, masks))
        if variant == SALIENCY_VIEW:  # same view and full-resolution masks: no second pass
            _add_saliency(saliency, probs, masks)
    if variant != SALIENCY_VIEW:
        for indices in batch_ranges(len(split), batch_size, progress=progress, desc="saliency"):
            images, masks = iou_view(split, SALIENCY_VIEW, indices, size)
            _add_saliency(saliency, method.predict(images).part_probs, masks)
    return (np.concatenate(ious) if ious else np.zeros(0)), saliency


class _ForegroundProtocol(Protocol):
    def evaluate(self, method: Any, splits: Mapping[str, Any], *, batch_size: int = 32, progress: bool = True,
                 device: Any = None) -> dict[str, MetricValue]:
        variant, split = self.options["iou"], splits["test"]
        ious, saliency = foreground_scores(method, split, variant, batch_size=batch_size, progress=progress)
        scores, ids = saliency.compute(), image_ids(split)
        return {"fg_iou": fg_iou_value(variant, ious, ids),
                "accuracy": PerImage(scores["accuracy"], ids, saliency.per_image()["accuracy"]),
                "max_fbeta": scores["max_fbeta"]}


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
