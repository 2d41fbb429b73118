"""Foreground IoU in the three reference variants (REFERENCE 1.4).

Each variant fixes (a) the view of the full-resolution image the method is shown
(``prepare_image``), (b) how the full-resolution GT mask is brought to the scoring grid
(``gt_mask_for_variant``) and (c) the per-image IoU and its aggregation:

- ``ganseg`` (default): the method sees the whole image resized to size x size (bilinear, aspect
  not kept); the GT is resized the same way, then > 0.5; foreground = argmax != 0 at size x size.
- ``redo``: the method sees the image with its shorter side resized to size (nearest) and centre
  cropped to size x size; the GT gets the same resize and crop, then > 0.5; the better IoU of the
  predicted mask and its inverse.
- ``melas``: the method sees the centre square crop resized to size x size (bilinear); the GT is
  centre-cropped at full resolution, then > 0.5; the prediction is upsampled to that square.

A prediction ``pred`` is either part probabilities [B, K+1, h, w] (channel 0 background) or a
foreground probability [B, h, w] (read as the two channels [1 - p, p]); it must be the method's
output on ``prepare_image(image, variant)``. GT masks are a sequence of full-resolution [H_i, W_i]
arrays: bool, uint8 in 0..255 (divided by 255, so > 0.5 means > 127.5), or float in [0, 1].
Resizes use ``torch.nn.functional.interpolate``: bilinear with ``antialias=True`` (this is what PIL's
BILINEAR does when shrinking; the references resize with PIL) and ``nearest-exact`` (PIL's NEAREST
samples pixel centres; plain ``nearest`` is off by half a pixel).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from segbench.protocols.metrics._arrays import to_numpy, to_torch

IOU_VARIANTS = ("ganseg", "redo", "melas")
IOU_SIZE = 128
IOU_EPS = 1e-6  # GANSeg cal_iou smoothing
REDO_BATCH_SIZE = 20  # ReDO train.py --batchSize default, the batch its evaluate() averages over


def foreground_from_probs(part_probs: Any) -> np.ndarray:
    """bool [B, H, W]: argmax over the K+1 channels is not background (GANSeg ``test_seg.py``
    ``evaluate_iou``).

    Ties go to the lowest channel, so a pixel whose background probability equals the best part's
    is background. Note this is not "parts sum beats background" when K > 1 (REFERENCE 1.4 calls
    them equivalent); we follow the argmax the code uses. Golden tie cases in test_iou.py.
    """
    probs = to_torch(part_probs)
    if probs.dim() == 3:
        probs = torch.stack([1 - probs, probs], dim=1)
    return (probs.argmax(dim=1) != 0).numpy()


def iou_per_image(pred: Any, gt: Any, empty: float = 0.0) -> np.ndarray:
    """|P and G| / (|P or G| + 1e-6) per image for bool [B, H, W] masks (GANSeg ``cal_iou``,
    ``test_seg.py``); an empty union gives ``empty`` (the formula's own value is 0).
    Tested against ``sklearn.metrics.jaccard_score``."""
    p, g = to_numpy(pred).astype(bool), to_numpy(gt).astype(bool)
    if p.shape != g.shape or p.ndim != 3:
        raise ValueError(f"pred and gt must both be [B, H, W], got {p.shape} and {g.shape}")
    inter = (p & g).sum(axis=(1, 2)).astype(np.float64)
    union = (p | g).sum(axis=(1, 2)).astype(np.float64)
    return np.where(union > 0, inter / (union + IOU_EPS), empty)


# ----- geometry shared by the image view and the GT mask -----------------------------------
def _centre_crop(t: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Crop the last two dims as torchvision's CenterCrop does (offsets int(round(excess / 2)))."""
    top = int(round((t.shape[-2] - height) / 2.0))
    left = int(round((t.shape[-1] - width) / 2.0))
    return t[..., top:top + height, left:left + width]


def _shorter_side_to(height: int, width: int, size: int) -> tuple[int, int]:
    """torchvision Resize(size) output: the shorter side becomes size, the longer int(size * ratio)."""
    if height <= width:
        return size, int(size * width / height)
    return int(size * height / width), size


def _bilinear(t: torch.Tensor, out_hw: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(t, size=out_hw, mode="bilinear", align_corners=False, antialias=True)


def _view(t: torch.Tensor, variant: str, size: int) -> torch.Tensor:
    """The variant's resize/crop of a [N, C, H, W] float tensor (image or soft GT mask).

    ``melas`` crops only: its image is additionally resized by ``prepare_image``, its GT is not.
    """
    height, width = t.shape[-2:]
    if variant == "ganseg":
        return _bilinear(t, (size, size))
    if variant == "redo":
        t = F.interpolate(t, size=_shorter_side_to(height, width, size), mode="nearest-exact")
        return _centre_crop(t, size, size)
    if variant == "melas":
        side = min(height, width)
        return _centre_crop(t, side, side)
    raise ValueError(f"unknown IoU variant {variant!r}; one of {', '.join(IOU_VARIANTS)}")


def _image_tensor(image: Any) -> torch.Tensor:
    """uint8 [H, W, 3] or float [3, H, W] in [0, 1] -> float64 [3, H, W] in [0, 1] (a copy:
    dataset arrays may be read-only)."""
    arr = to_numpy(image)
    if arr.dtype == np.uint8:
        return torch.tensor(arr).permute(2, 0, 1).double() / 255.0
    return to_torch(arr)


def prepare_image(image: Any, variant: str, size: int = IOU_SIZE) -> torch.Tensor:
    """The view of a full-resolution image a method must segment for ``variant``: float32
    [3, size, size] in [0, 1]. ``image`` is uint8 [H, W, 3] (as ``Split.image``) or float [3, H, W]
    in [0, 1]. ganseg: GANSeg ``cub_preprocess.py`` (PIL bilinear to 128x128); redo: ReDO
    ``train.py`` (Resize(128, NEAREST) + CenterCrop(128)); melas: ``real_dataset.py``
    (central_crop + Resize(128)). Shape/crop behaviour tested in tests/metrics/test_iou.py."""
    t = _view(_image_tensor(image)[None], variant, size)
    if variant == "melas":
        t = _bilinear(t, (size, size))
    return t[0].clamp(0, 1).float()


def prepare_uncropped_image(image: Any, size: int = IOU_SIZE) -> torch.Tensor:
    """The saliency view of Melas-Kyriazi et al.'s released code for DUTS / ECSSD / DUT-OMRON
    (``config/segment.yaml`` ``crop: False``; ``real_dataset.py`` ``T.Resize(128)``): the whole
    image with its shorter side resized to ``size`` and the longer to int(size * ratio), aspect
    kept, bilinear (antialiased, as PIL when shrinking). float32 [3, h, w] in [0, 1]; ``image`` as
    for ``prepare_image``. The GT stays at full resolution (``resize_mask=False``)."""
    t = _image_tensor(image)
    out_hw = _shorter_side_to(*t.shape[-2:], size)
    if tuple(t.shape[-2:]) != out_hw:
        t = _bilinear(t[None], out_hw)[0]
    return t.clamp(0, 1).float()


def _gt_float(mask: Any) -> torch.Tensor:
    m = to_numpy(mask)
    if m.ndim != 2:
        raise ValueError(f"a GT mask must be [H, W], got {m.shape}")
    if m.dtype == np.uint8:
        if m.max() == 1:  # a 0/1 mask stored as uint8 would read as 1/255: refuse rather than guess
            raise ValueError("uint8 GT masks are read as 0..255; pass a 0/1 mask as bool")
        return torch.from_numpy(m.astype(np.float64) / 255.0)
    return torch.from_numpy(m.astype(np.float64))


def gt_mask_for_variant(gt_mask: Any, variant: str, size: int = IOU_SIZE) -> np.ndarray:
    """A full-resolution GT mask [H, W] brought to the variant's scoring grid and binarised (> 0.5):
    ganseg and redo -> [size, size], melas -> [min(H, W)] * 2 (REFERENCE 1.4). Tested against PIL
    ``resize(BILINEAR)`` and torchvision ``Resize(NEAREST)`` / ``CenterCrop`` on PIL images."""
    return (_view(_gt_float(gt_mask)[None, None], variant, size)[0, 0] > 0.5).numpy()


def binary_gt(gt_mask: Any) -> np.ndarray:
    """A GT mask [H, W] (bool, uint8 0..255 or float in [0, 1]) binarised at > 0.5 at its own resolution."""
    return (_gt_float(gt_mask) > 0.5).numpy()


def _as_part_probs(pred: Any) -> torch.Tensor:
    probs = to_torch(pred)
    if probs.dim() == 3:
        probs = torch.stack([1 - probs, probs], dim=1)
    if probs.dim() != 4 or probs.shape[1] < 2:
        raise ValueError(f"pred must be [B, K+1, h, w] part probs or [B, h, w] fg prob, got {tuple(probs.shape)}")
    return probs


def _predicted_fg_at(pred: Any, gt_masks: Sequence[Any], size: int) -> np.ndarray:
    probs = _as_part_probs(pred)
    if tuple(probs.shape[2:]) != (size, size) or len(probs) != len(gt_masks):
        raise ValueError(f"need one {size}x{size} prediction per GT mask, got {tuple(probs.shape)} "
                         f"for {len(gt_masks)} masks")
    return foreground_from_probs(probs)


def fg_iou_ganseg(pred: Any, gt_masks: Sequence[Any], size: int = IOU_SIZE) -> np.ndarray:
    """Per-image IoU, ``ganseg`` variant (default; GANSeg ``test_seg.py`` ``evaluate_iou`` with the masks of
    ``datasets/cub_preprocess.py``): pred [B, ., size, size] on the whole image resized to
    size x size; GT resized bilinearly to size x size then > 0.5; foreground = argmax != 0;
    |P and G| / (|P or G| + 1e-6). Aggregate with a plain mean over images. Tested with a golden
    case and via ``iou_per_image`` (jaccard_score) and ``gt_mask_for_variant`` (PIL)."""
    fg = _predicted_fg_at(pred, gt_masks, size)
    gt = np.stack([gt_mask_for_variant(m, "ganseg", size) for m in gt_masks])
    return iou_per_image(fg, gt)


def _plain_iou(p: np.ndarray, g: np.ndarray) -> float:
    union = np.count_nonzero(p | g)
    return np.count_nonzero(p & g) / union if union else 0.0  # 0/0 would be NaN in the references


def fg_iou_redo(pred: Any, gt_masks: Sequence[Any], size: int = IOU_SIZE) -> np.ndarray:
    """Per-image IoU, ``redo`` variant (ReDO ``train.py`` ``evaluate``, transforms Resize(128,
    NEAREST) + CenterCrop(128)): pred [B, ., size, size] on ``prepare_image(..., "redo")``; GT given
    the same nearest resize and crop, > 0.5; the better IoU of the predicted mask and its inverse
    (ReDO thresholds its first mask at >= 0.5; with the inverse also tried, which channel is "fg"
    does not matter). An empty union counts 0. ReDO reports the mean of per-batch means: aggregate
    with ``mean_of_batch_means``. Tested: an inverted prediction scores 1 (golden)."""
    fg = _predicted_fg_at(pred, gt_masks, size)
    gts = [gt_mask_for_variant(m, "redo", size) for m in gt_masks]
    return np.array([max(_plain_iou(p, g), _plain_iou(~p, g)) for p, g in zip(fg, gts)], dtype=np.float64)


def fg_iou_melas(pred: Any, gt_masks: Sequence[Any]) -> np.ndarray:
    """Per-image IoU, ``melas`` variant (Melas-Kyriazi et al. ``src/segmentation/main.py``
    ``test_step`` and ``src/metrics.py`` ``compute_iou``; masks from ``real_dataset.py`` with
    ``resize_mask=False``): pred [B, ., h, w] on ``prepare_image(..., "melas")``; GT centre-cropped
    to a square at full resolution, > 0.5; the prediction is upsampled bilinearly
    (align_corners=False) to that square and thresholded there. The reference upsamples logits; we
    upsample log-probabilities, which differ from the logits by a per-pixel constant that the
    (linear) interpolation carries equally into every channel, so argmax (= softmax fg > 0.5 for two
    channels) is unchanged. Probabilities are clamped at the smallest float64 to keep logs finite.
    Empty union counts 0. Aggregate with a plain mean over images. Tested against the reference's
    own computation from logits (interpolate, softmax, > 0.5) in tests/metrics/test_iou.py."""
    probs = _as_part_probs(pred)
    if len(probs) != len(gt_masks):
        raise ValueError(f"{len(probs)} predictions for {len(gt_masks)} GT masks")
    log_probs = probs.clamp_min(torch.finfo(torch.float64).tiny).log()
    ious = []
    for lp, mask in zip(log_probs, gt_masks):
        gt = gt_mask_for_variant(mask, "melas")
        up = F.interpolate(lp[None], size=gt.shape, mode="bilinear", align_corners=False)
        ious.append(_plain_iou((up[0].argmax(dim=0) != 0).numpy(), gt))
    return np.array(ious, dtype=np.float64)


def fg_iou(variant: str, pred: Any, gt_masks: Sequence[Any]) -> np.ndarray:
    """Per-image IoU in ``variant``: the one dispatch over the three functions above. ``pred`` is
    the method's output on ``prepare_image(image, variant)``; ganseg and redo score on its grid
    (its side is their ``size``), melas on the centre-cropped full-resolution mask."""
    if variant == "ganseg":
        return fg_iou_ganseg(pred, gt_masks, pred.shape[-1])
    if variant == "redo":
        return fg_iou_redo(pred, gt_masks, pred.shape[-1])
    if variant == "melas":
        return fg_iou_melas(pred, gt_masks)
    raise ValueError(f"unknown IoU variant {variant!r}; one of {', '.join(IOU_VARIANTS)}")


# The variants whose reported number is the plain mean of the per-image IoUs (redo averages batch
# means, which no per-image value reproduces).
PLAIN_MEAN_VARIANTS = ("ganseg", "melas")


def mean_of_batch_means(values: Any, batch_size: int = REDO_BATCH_SIZE, drop_last: bool = False) -> float:
    """Mean over consecutive batches of ``batch_size`` per-image values of each batch's mean (ReDO's
    ``sumScoreIoU / nbIter``). It depends on the evaluation batch size, so the per-image values are
    regrouped here, independent of how the harness batched them. ReDO's loaders drop the last
    incomplete batch; we keep it unless ``drop_last``. Golden values in test_iou.py."""
    v = to_numpy(values, np.float64).reshape(-1)
    batches = [v[i:i + batch_size] for i in range(0, len(v), batch_size)]
    if drop_last and batches and len(batches[-1]) < batch_size:
        batches = batches[:-1]
    if not batches:
        raise ValueError("no complete batch to average")
    return float(np.mean([b.mean() for b in batches]))


def summarise_fg_iou(variant: str, per_image: Any, redo_batch_size: int = REDO_BATCH_SIZE) -> float:
    """The reported number from per-image IoUs: mean of batch means for redo, plain mean otherwise."""
    if variant not in IOU_VARIANTS:
        raise ValueError(f"unknown IoU variant {variant!r}; one of {', '.join(IOU_VARIANTS)}")
    if variant == "redo":
        return mean_of_batch_means(per_image, redo_batch_size)
    return float(np.mean(to_numpy(per_image, np.float64)))
