"""cub_fg / flowers_fg: Melas-Kyriazi Tab.1 saliency accuracy and max F-beta on the melas view, beside
foreground IoU, on fake splits with hand-computed values."""
from fractions import Fraction

import numpy as np
import pytest
import torch


class FakeFgSplit:
    """A CUB/Flowers test split: full-resolution images and masks (``full_image``, ``full_fg_mask``)."""

    name = "test"

    def __init__(self, images, masks):
        self.images, self.masks = images, masks

    def __len__(self):
        return len(self.images)

    def image(self, i):
        return np.zeros((128, 128, 3), np.uint8)

    def full_image(self, i):
        return self.images[i]

    def full_fg_mask(self, i):
        return self.masks[i]


class HalfAndHalf:
    """fg 0.8 on the left half of whatever view it is shown, 0.2 on the right (K = 1)."""

    def __init__(self):
        self.seen = []

    def predict(self, images):
        self.seen.append(tuple(images.shape))
        fg = torch.full(images.shape[:1] + images.shape[2:], 0.2, dtype=torch.float64)
        fg[..., :images.shape[-1] // 2] = 0.8
        return type("P", (), {"part_probs": torch.stack([1 - fg, fg], 1)})()


def f(p, r):
    return (1 + Fraction(3, 10)) * p * r / (Fraction(3, 10) * p + r)


@pytest.mark.parametrize("protocol", ["cub_fg", "flowers_fg"])
@pytest.mark.parametrize("variant", ["melas", "redo"])
def test_saliency_scores_on_the_melas_view(protocol, variant):
    """A 256 x 320 image: the melas view is its centre 256 x 256 square (columns 32..287) resized to
    128. Upsampled x2 back to that square (logits), the fg probability of each row is 127 x 0.8,
    2/3, 1/3, 127 x 0.2. GT: columns 32..95 of the image = the square's first 64 columns.
    Predicted square columns and (P, R): t < 0.2: 256, (1/4, 1); [0.2, 1/3): 129, (64/129, 1);
    [1/3, 2/3): 128, (1/2, 1); [2/3, 0.8): 127, (64/127, 1); t >= 0.8: none, F = 0.
    Max F = F(64/127, 1) = 416/731; accuracy at 0.5 = 1 - 64/256 = 3/4."""
    from segbench.protocols import PROTOCOLS

    mask = np.zeros((256, 320), bool)
    mask[:, 32:96] = True
    split = FakeFgSplit([np.zeros((256, 320, 3), np.uint8)], [mask])
    method = HalfAndHalf()
    scores = PROTOCOLS.get(protocol)({"iou": variant}).score(method, {"test": split}, batch_size=4, progress=False)
    rows = scores.records
    got = {r["metric"]: r["value"] for r in rows}
    assert [r["metric"] for r in rows] == [f"fg_iou_{variant}", "saliency_accuracy", "saliency_max_fbeta"]
    assert f(Fraction(64, 127), 1) == Fraction(416, 731)
    assert got["saliency_max_fbeta"] == pytest.approx(416 / 731, rel=1e-12)
    assert got["saliency_accuracy"] == pytest.approx(0.75, rel=1e-12)
    assert all(r["n_eval"] == 1 for r in rows)
    # melas: the IoU pass doubles as the saliency pass; other variants need a second one.
    assert method.seen == [(1, 3, 128, 128)] * (1 if variant == "melas" else 2)
    # fg_iou_melas thresholds the same upsampled map (argmax): predicted 128 square columns, GT 64.
    if variant == "melas":
        assert got["fg_iou_melas"] == pytest.approx(0.5, rel=1e-12)
    # per-image values (the fake split has no image_id: ids are indices) for the plain means only:
    # the melas IoU and the accuracy; not redo's mean of batch means, not the max over thresholds
    expected = [("test", "0", f"fg_iou_{variant}", 0.5)] if variant == "melas" else []
    assert scores.per_image == expected + [("test", "0", "saliency_accuracy", pytest.approx(0.75, rel=1e-12))]


@pytest.mark.parametrize("protocol", ["cub_fg", "flowers_fg"])
def test_foreground_protocols_declare_the_saliency_metrics(protocol):
    from segbench.protocols import PROTOCOLS

    spec = PROTOCOLS.get(protocol).spec
    assert spec.version == "2"
    assert [m.name for m in spec.metric_specs(spec.resolve_options({}))] == [
        "fg_iou_ganseg", "saliency_accuracy", "saliency_max_fbeta"]
