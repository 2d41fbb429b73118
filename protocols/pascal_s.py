"""``pascal_s``: saliency metrics (Melas-Kyriazi et al. Table 1 protocol) and foreground IoU on
the 850 PASCAL-S images.

- Saliency (REFERENCE 1.5): the method sees the ``melas`` view (centre square crop resized to
  128); its foreground probability (1 - background channel) is upsampled bilinearly to the
  centre-cropped full-resolution mask; accuracy and IoU at > 0.5 per image, mean over images;
  max F-beta (beta^2 = 0.3) over thresholds k/255 from precision/recall averaged over images.
- Foreground IoU in the variant of option ``iou`` (ganseg default, redo, melas), each with its
  own view of the image (``protocols.metrics.iou``).
The method fits on the same 850 images it is scored on: unsupervised methods never see the masks,
and the saliency benchmarks of Melas-Kyriazi et al. likewise use no training split of their own.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from protocols.metrics.iou import FG_IOU_FUNCTIONS, IOU_SIZE, IOU_VARIANTS, gt_mask_for_variant, \
    prepare_image, summarise_fg_iou
from protocols.metrics.saliency import SaliencyAccumulator
from protocols.spec import MetricSpec, Protocol, ProtocolSpec

SALIENCY_VIEW = "melas"


def predict_view(method: Any, full_images: list[np.ndarray], variant: str) -> torch.Tensor:
    """Part probabilities of the method on the variant's view of each full-resolution image."""
    views = torch.stack([prepare_image(image, variant, IOU_SIZE) for image in full_images])
    return method.predict(views).part_probs


def foreground_on_gt_grid(part_probs: torch.Tensor, gt_shapes: list[tuple[int, int]]) -> list[np.ndarray]:
    """Foreground probability (1 - background) bilinearly resized to each GT grid."""
    fg = (1 - part_probs[:, :1].double()).clamp(0, 1)
    return [F.interpolate(p[None], size=shape, mode="bilinear", align_corners=False)[0, 0].clamp(0, 1).numpy()
            for p, shape in zip(fg, gt_shapes)]


class PascalSProtocol(Protocol):
    spec = ProtocolSpec(
        name="pascal_s",
        version="1",
        reproduces="Melas-Kyriazi et al. Tab.1 metrics (saliency) on PASCAL-S; fg IoU as GANSeg Tab.2",
        dataset="pascal_s",
        splits={"fit": "all", "test": "all"},
        image_size=IOU_SIZE,
        needs=frozenset({"parts"}),
        num_parts=1,
        metrics=(
            MetricSpec("saliency_accuracy", True, "all", "", "pixel accuracy at fg prob > 0.5, mean over images"),
            MetricSpec("saliency_iou", True, "all", "", "IoU at fg prob > 0.5 per image, mean over images"),
            MetricSpec("saliency_max_fbeta", True, "all", "",
                       "max over t=k/255 of F(beta^2=0.3) from image-averaged precision/recall"),
            MetricSpec("fg_iou_{iou}", True, "all", "", "foreground IoU, reference variant in the name"),
        ),
        options={"iou": IOU_VARIANTS},
    )

    def evaluate(self, method: Any, splits: Mapping[str, Any], *, batch_size: int = 32,
                 progress: bool = True) -> list[dict[str, Any]]:
        split, variant = splits["test"], self.options["iou"]
        saliency = SaliencyAccumulator()
        ious: list[np.ndarray] = []
        for start in tqdm(range(0, len(split), batch_size), desc="test", unit="batch", disable=not progress,
                          leave=False):
            indices = range(start, min(start + batch_size, len(split)))
            images = [split.full_image(i) for i in indices]
            masks = [split.annotation(i)["fg_mask_full"] for i in indices]
            probs = predict_view(method, images, SALIENCY_VIEW)
            gts = [gt_mask_for_variant(m, SALIENCY_VIEW) for m in masks]
            saliency.update(foreground_on_gt_grid(probs, [g.shape for g in gts]), gts)
            if variant != SALIENCY_VIEW:
                probs = predict_view(method, images, variant)
            ious.append(FG_IOU_FUNCTIONS[variant](probs, masks))
        scores = saliency.compute()
        n = len(split)
        return [
            {"metric": "saliency_accuracy", "split": split.name, "value": scores["accuracy"], "n_eval": n},
            {"metric": "saliency_iou", "split": split.name, "value": scores["iou"], "n_eval": n},
            {"metric": "saliency_max_fbeta", "split": split.name, "value": scores["max_fbeta"], "n_eval": n},
            {"metric": f"fg_iou_{variant}", "split": split.name,
             "value": summarise_fg_iou(variant, np.concatenate(ious)), "n_eval": n},
        ]
