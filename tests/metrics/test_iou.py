"""Foreground IoU variants (REFERENCE 1.4) against sklearn, PIL/torchvision transforms and logits."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms as T
from PIL import Image
from sklearn.metrics import jaccard_score

from segbench.protocols.metrics.iou import (IOU_VARIANTS, fg_iou, fg_iou_ganseg, fg_iou_melas, fg_iou_redo,
                                   foreground_from_probs, gt_mask_for_variant, iou_per_image,
                                   mean_of_batch_means, prepare_image, summarise_fg_iou)


def _ellipse(h, w, cy, cx, ry, rx, soft=True):
    """uint8 mask 0..255 with a soft (CUB-like) or hard boundary."""
    yy, xx = np.mgrid[:h, :w]
    d = np.sqrt(((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2)
    m = np.clip((1.15 - d) / 0.3, 0, 1) if soft else (d < 1).astype(float)
    return (m * 255).round().astype(np.uint8)


def test_foreground_is_argmax_not_background_ties_to_background():
    probs = np.array([[[[0.4]], [[0.3]], [[0.3]]], [[[0.2]], [[0.5]], [[0.3]]], [[[0.5]], [[0.5]], [[0.0]]]])
    np.testing.assert_array_equal(foreground_from_probs(probs)[:, 0, 0], [False, True, False])
    np.testing.assert_array_equal(foreground_from_probs(np.array([[[0.7, 0.5, 0.2]]])), [[[True, False, False]]])


def test_iou_per_image_matches_jaccard_and_empty_union():
    rng = np.random.default_rng(0)
    p, g = rng.random((6, 9, 11)) > 0.5, rng.random((6, 9, 11)) > 0.6
    expected = [jaccard_score(g[i].ravel(), p[i].ravel()) for i in range(6)]
    np.testing.assert_allclose(iou_per_image(p, g), expected, rtol=1e-5)
    empty = np.zeros((1, 4, 4), bool)
    assert iou_per_image(empty, empty)[0] == 0.0
    assert iou_per_image(empty, empty, empty=1.0)[0] == 1.0


def test_ganseg_gt_matches_pil_bilinear_resize():
    """GANSeg cub_preprocess: PIL resize((128,128), BILINEAR) then > 255/2."""
    for h, w in [(333, 500), (500, 375), (129, 140)]:
        m = _ellipse(h, w, h * 0.45, w * 0.55, h * 0.3, w * 0.25)
        pil = np.asarray(Image.fromarray(m).resize((128, 128), resample=Image.BILINEAR)) > 255 / 2
        ours = gt_mask_for_variant(m, "ganseg")
        assert ours.shape == (128, 128)
        assert (ours != pil).mean() < 0.005  # only uint8 rounding at the boundary may differ


def test_redo_and_melas_gt_match_torchvision_transforms():
    """ReDO: Resize(128, NEAREST) + CenterCrop(128), > .5; melas: central_crop, > .5 at full size."""
    for h, w in [(333, 500), (500, 375), (131, 129)]:
        m = _ellipse(h, w, h * 0.45, w * 0.55, h * 0.3, w * 0.25)
        im = Image.fromarray(m)
        redo = np.asarray(T.CenterCrop(128)(T.Resize(128, Image.NEAREST)(im))) > 127.5
        assert (gt_mask_for_variant(m, "redo") != redo).mean() < 0.001
        melas = np.asarray(T.CenterCrop(min(h, w))(im)) > 127.5
        np.testing.assert_array_equal(gt_mask_for_variant(m, "melas"), melas)


def test_prepare_image_views():
    image = np.random.default_rng(1).integers(0, 256, size=(90, 150, 3), dtype=np.uint8)
    for variant in IOU_VARIANTS:
        view = prepare_image(image, variant)
        assert view.shape == (3, 128, 128) and view.dtype == torch.float32
    # melas keeps the central square: a column outside it cannot influence the view
    changed = image.copy()
    changed[:, :20] = 0
    assert torch.equal(prepare_image(image, "melas"), prepare_image(changed, "melas"))


def test_ganseg_golden_and_mask_at_128_is_unchanged():
    gt = np.zeros((128, 128), bool)
    gt[:, :64] = True
    pred = np.zeros((1, 128, 128))
    pred[0, :, :96] = 0.9  # 128*64 overlap, 128*96 union
    np.testing.assert_array_equal(gt_mask_for_variant(gt, "ganseg"), gt)
    np.testing.assert_allclose(fg_iou_ganseg(pred, [gt]), [64 / (96 + 1e-6 / 128)], rtol=1e-9)


def test_redo_takes_the_better_of_mask_and_inverse():
    gt = _ellipse(200, 300, 100, 150, 50, 80, soft=False)
    gt_view = gt_mask_for_variant(gt, "redo")
    inverse = (~gt_view).astype(np.float64)[None]
    assert fg_iou_redo(inverse, [gt])[0] == pytest.approx(1.0)
    assert fg_iou_ganseg(inverse, [gt])[0] < 0.5


def test_melas_probs_path_equals_logit_reference():
    """melas test_step: F.interpolate(logits, mask size, bilinear), softmax[:, 1] > 0.5 vs mask."""
    rng = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 2, 16, 16, generator=rng, dtype=torch.float64) * 3
    masks = [_ellipse(h, w, h / 2, w / 2, h / 3, w / 4) for h, w in [(40, 60), (64, 48), (33, 33)]]
    expected = []
    for lg, m in zip(logits, masks):
        gt = torch.from_numpy(T.CenterCrop(min(m.shape))(torch.from_numpy(m)[None]).numpy()[0] / 255.0 > 0.5)
        up = F.interpolate(lg[None], gt.shape, mode="bilinear", align_corners=False)
        hard = torch.softmax(up, 1)[0, 1] > 0.5
        expected.append((hard & gt).sum().item() / (hard | gt).sum().item())
    np.testing.assert_allclose(fg_iou_melas(torch.softmax(logits, 1), masks), expected, rtol=1e-12)
    np.testing.assert_allclose(fg_iou_melas(torch.softmax(logits, 1)[:, 1], masks), expected, rtol=1e-12)


def test_melas_empty_union_counts_zero():
    assert fg_iou_melas(np.zeros((1, 8, 8)), [np.zeros((20, 30), bool)])[0] == 0.0


def test_mean_of_batch_means_golden():
    assert mean_of_batch_means([1, 1, 0], batch_size=2) == pytest.approx(0.5)
    assert mean_of_batch_means([1, 1, 0], batch_size=2, drop_last=True) == pytest.approx(1.0)
    assert summarise_fg_iou("ganseg", [1, 1, 0]) == pytest.approx(2 / 3)
    # batched accumulation is exact: regrouping happens on the concatenated per-image values
    values = np.random.default_rng(2).random(47)
    assert mean_of_batch_means(np.concatenate([values[:13], values[13:]]), 20) == mean_of_batch_means(values, 20)


def test_three_iou_variants_give_different_numbers_on_the_same_predictions():
    rng = np.random.default_rng(3)
    masks = [_ellipse(h, w, h * rng.uniform(0.3, 0.7), w * rng.uniform(0.3, 0.7), h / 4, w / 3)
             for h, w in [(200, 320), (300, 180), (150, 260), (240, 240)] * 6]
    pred = np.stack([gt_mask_for_variant(m, "ganseg") for m in masks]).astype(np.float64)
    pred = np.clip(pred * 0.8 + 0.1 + rng.normal(0, 0.25, pred.shape), 0, 1)
    scores = [summarise_fg_iou(v, fg_iou(v, pred, masks)) for v in IOU_VARIANTS]
    assert len({round(s, 4) for s in scores}) == 3, scores


def test_uint8_zero_one_mask_is_refused():
    with pytest.raises(ValueError):
        gt_mask_for_variant(np.eye(4, dtype=np.uint8), "ganseg")
