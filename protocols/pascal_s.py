"""``pascal_s``: saliency metrics (Melas-Kyriazi et al. Table 1 protocol, as their released code
evaluates DUTS / ECSSD / DUT-OMRON) and foreground IoU on the 850 PASCAL-S images.

- Saliency (``protocols.metrics.saliency``; audit shared/docs/latent_direction_code_audit.md rows
  1, 2, 2b, 9): the method sees the whole image with its shorter side resized to 128, aspect kept
  (``config/segment.yaml:32-40`` ``crop: False``; ``real_dataset.py:58-63``); its prediction is
  upsampled (log-probabilities, i.e. logits up to a per-pixel constant) to the full-resolution
  mask and scored there: accuracy and IoU of fg prob > 0.5, max F-beta over k/255 (k = 1..254)
  of the per-image F-beta averaged over images, and F-beta at 0.5 averaged likewise.
- Foreground IoU in the variant of option ``iou`` (ganseg default, redo, melas), each with its
  own view of the image (``protocols.metrics.iou``).
- Per-image values: for accuracy, IoU, F-beta at 0.5 (not with ``average=mean_pr``, whose F comes
  from averaged precision and recall) and the ganseg / melas IoU; max F-beta has none.

Options that restore this protocol's version 1 (they rename the saliency metrics, so a number
always says how it was computed): ``view=crop`` shows the method the CUB/Flowers ``melas`` view
(centre square crop resized to 128) and scores on the centre-cropped full-resolution mask
(``saliency_*_crop``); ``average=mean_pr`` computes F from precision and recall averaged over
images, over k = 0..255 (``saliency_*fbeta*_mean_pr``). Version 1 upsampled probabilities rather
than log-probabilities (audit row 9: ~2e-4 of pixels differ), so these reproduce it to that.

The method fits on the same 850 images it is scored on: unsupervised methods never see the masks,
and the saliency benchmarks of Melas-Kyriazi et al. likewise use no training split of their own.
"""
from __future__ import annotations

import dataclasses
from collections import defaultdict
from typing import Any, Mapping

import numpy as np
import torch

from segbench.protocols.evaluation import batch_ranges, image_ids
from segbench.protocols.foreground import fg_iou_value
from segbench.protocols.metrics.iou import IOU_SIZE, IOU_VARIANTS, binary_gt, fg_iou, gt_mask_for_variant, \
    prepare_image, prepare_uncropped_image
from segbench.protocols.metrics.saliency import AVERAGES, SaliencyAccumulator, foreground_on_grids
from segbench.protocols.spec import MetricSpec, MetricValue, PerImage, Protocol, ProtocolSpec

# "saliency": the released code's view for its saliency sets (crop False); "crop": the melas view.
SALIENCY_VIEWS = ("saliency", "crop")
SALIENCY_SCORES = ("accuracy", "iou", "max_fbeta", "fbeta_at_0.5")  # SaliencyAccumulator.compute keys


def saliency_metric_name(score: str, options: Mapping[str, str]) -> str:
    """``saliency_<score>`` plus a suffix for each non-default option that changes it: ``_crop``
    (view=crop) and, for the F-beta scores, ``_mean_pr`` (average=mean_pr)."""
    name = f"saliency_{score}"
    if options.get("view", SALIENCY_VIEWS[0]) != SALIENCY_VIEWS[0]:
        name += f"_{options['view']}"
    if "fbeta" in score and options.get("average", AVERAGES[0]) != AVERAGES[0]:
        name += f"_{options['average']}"
    return name


@dataclasses.dataclass(frozen=True)
class SaliencyProtocolSpec(ProtocolSpec):
    """A ProtocolSpec whose ``saliency_*`` metric names get the suffixes of ``saliency_metric_name``
    (a format placeholder cannot leave the default unsuffixed)."""

    def metric_specs(self, options: Mapping[str, str]) -> list[MetricSpec]:
        specs = super().metric_specs(options)
        return [dataclasses.replace(m, name=saliency_metric_name(m.name[len("saliency_"):], options))
                if m.name.startswith("saliency_") else m for m in specs]


def predict_each(method: Any, views: list[torch.Tensor]) -> list[torch.Tensor]:
    """Part probabilities ``[K+1, h, w]`` per view; views of equal size share one ``predict`` call
    (aspect-kept views differ in size, and ``predict`` takes a batch of one size)."""
    groups: dict[tuple[int, ...], list[int]] = defaultdict(list)
    for i, view in enumerate(views):
        groups[tuple(view.shape)].append(i)
    out: list[Any] = [None] * len(views)
    for indices in groups.values():
        probs = method.predict(torch.stack([views[i] for i in indices])).part_probs
        for i, p in zip(indices, probs):
            out[i] = p
    return out


def saliency_inputs(full_images: list[np.ndarray], masks: list[np.ndarray],
                    view: str) -> tuple[list[torch.Tensor], list[np.ndarray]]:
    """(views the method segments, bool GT masks on the scoring grid) for ``view``."""
    if view == "saliency":
        return [prepare_uncropped_image(image, IOU_SIZE) for image in full_images], [binary_gt(m) for m in masks]
    if view == "crop":
        return [prepare_image(image, "melas", IOU_SIZE) for image in full_images], \
            [gt_mask_for_variant(m, "melas") for m in masks]
    raise ValueError(f"unknown saliency view {view!r}; one of {', '.join(SALIENCY_VIEWS)}")


def score_saliency(method: Any, accumulator: SaliencyAccumulator, full_images: list[np.ndarray],
                   masks: list[np.ndarray], view: str) -> list[torch.Tensor]:
    """Add one batch of images to ``accumulator``; returns the method's predictions on the views."""
    views, gts = saliency_inputs(full_images, masks, view)
    probs = predict_each(method, views)
    accumulator.update(foreground_on_grids(probs, [g.shape for g in gts]), gts)
    return probs


class PascalSProtocol(Protocol):
    spec = SaliencyProtocolSpec(
        name="pascal_s",
        version="2",
        reproduces="Melas-Kyriazi et al. Tab.1 metrics (saliency, as their code scores DUTS/ECSSD/DUT-OMRON) "
                   "on PASCAL-S; fg IoU as GANSeg Tab.2",
        dataset="pascal_s",
        splits={"fit": "all", "test": "all"},
        image_size=IOU_SIZE,
        needs=frozenset({"parts"}),
        num_parts=1,
        metrics=(
            MetricSpec("saliency_accuracy", True, "all", "", "pixel accuracy at fg prob > 0.5, mean over images",
                       key="accuracy"),
            MetricSpec("saliency_iou", True, "all", "", "IoU at fg prob > 0.5 per image, mean over images", key="iou"),
            MetricSpec("saliency_max_fbeta", True, "all", "",
                       "max over t=k/255 (k=1..254) of the per-image F(beta^2=0.3) averaged over images",
                       key="max_fbeta"),
            MetricSpec("saliency_fbeta_at_0.5", True, "all", "",
                       "per-image F(beta^2=0.3) at fg prob > 0.5 averaged over images", key="fbeta_at_0.5"),
            MetricSpec("fg_iou_{iou}", True, "all", "", "foreground IoU, reference variant in the name",
                       key="fg_iou"),
        ),
        options={"iou": IOU_VARIANTS, "view": SALIENCY_VIEWS, "average": AVERAGES},
    )

    def evaluate(self, method: Any, splits: Mapping[str, Any], *, batch_size: int = 32, progress: bool = True,
                 device: Any = None) -> dict[str, MetricValue]:
        split, variant, view = splits["test"], self.options["iou"], self.options["view"]
        saliency = SaliencyAccumulator(average=self.options["average"])
        ious: list[np.ndarray] = []
        for indices in batch_ranges(len(split), batch_size, progress=progress, desc="test"):
            images = [split.full_image(i) for i in indices]
            masks = [split.annotation(i)["fg_mask_full"] for i in indices]
            probs = score_saliency(method, saliency, images, masks, view)
            if not (view == "crop" and variant == "melas"):  # the crop view is the melas IoU view
                probs = method.predict(torch.stack([prepare_image(image, variant, IOU_SIZE)
                                                    for image in images])).part_probs
            else:
                probs = torch.stack(probs)
            ious.append(fg_iou(variant, probs, masks))
        scores, per_image, ids = saliency.compute(), saliency.per_image(), image_ids(split)
        out: dict[str, MetricValue] = {score: PerImage(scores[score], ids, per_image[score]) if score in per_image
                                       else scores[score] for score in SALIENCY_SCORES}
        out["fg_iou"] = fg_iou_value(variant, np.concatenate(ious), ids)
        return out
