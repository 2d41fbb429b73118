"""The real-image datasets and protocols on ../shared/data: faces_wild, pascal_s, cub_photos(_fid)."""
import csv
import json
import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from PIL import Image

from segbench.benchmark.errors import DataNotFoundError
from tests.conftest import SHARED_DATA, requires_shared_data


# ----------------------------------------------------------------------------- faces_wild
@requires_shared_data("faces_wild68")
def test_faces_wild_split_is_identity_disjoint_with_documented_sizes():
    from segbench.datasets.faces_wild import FacesWild, identity_of

    data = FacesWild(SHARED_DATA)
    fit, test = data.split("fit"), data.split("test")
    assert (len(fit), len(test)) == (data.SPLITS["fit"].expected_size, data.SPLITS["test"].expected_size)
    assert len(fit) + len(test) == 3462
    fit_ids = {identity_of(p.name) for p in fit.paths}
    test_ids = {identity_of(p.name) for p in test.paths}
    assert not fit_ids & test_ids
    assert len(test_ids) == 65 and len(fit_ids) == 282


@requires_shared_data("faces_wild68")
def test_faces_wild_landmarks_scale_with_the_whole_image_resize():
    from segbench.datasets.faces_wild import FacesWild

    data = FacesWild(SHARED_DATA, image_size=128)
    split = data.split("fit")
    row = next(r for r in csv.DictReader(open(SHARED_DATA / "faces_wild68" / "landmarks5.csv"))
               if SHARED_DATA / "faces_wild68" / r["file"] == split.paths[0])
    sx, sy = 128 / float(row["width"]), 128 / float(row["height"])
    ann = split.annotation(0)
    # Hand-computed from the CSV row: x scales by 128/width, y by 128/height.
    assert ann["landmarks"][2] == pytest.approx([float(row["nose_x"]) * sx, float(row["nose_y"]) * sy], rel=1e-6)
    eye_gap = math.hypot((float(row["lefteye_x"]) - float(row["righteye_x"])) * sx,
                         (float(row["lefteye_y"]) - float(row["righteye_y"])) * sy)
    assert ann["ref_length"] == pytest.approx(eye_gap, rel=1e-5)
    assert split.image(0).shape == (128, 128, 3) and split.image(0).dtype == np.uint8


def test_missing_root_names_the_file_layout_and_source(tmp_path):
    from segbench.datasets.faces_wild import FacesWild
    from segbench.datasets.pascal_s import PascalS

    with pytest.raises(DataNotFoundError, match=r"landmarks5\.csv.*expected.*source"):
        FacesWild(tmp_path)
    with pytest.raises(DataNotFoundError, match=r"manifest\.csv"):
        PascalS(tmp_path)
    with pytest.raises(DataNotFoundError, match="--data-root"):
        FacesWild(None)


# ----------------------------------------------------------------------------- pascal_s
def test_pascal_mask_rule_is_at_least_128(tmp_path):
    from segbench.datasets.pascal_s import binary_mask

    values = np.array([[0, 127, 128, 255]], np.uint8)
    Image.fromarray(values).save(tmp_path / "m.png")
    assert binary_mask(tmp_path / "m.png").tolist() == [[False, False, True, True]]


@requires_shared_data("pascal_s")
def test_pascal_s_has_850_images_with_full_resolution_masks():
    from segbench.datasets.pascal_s import PascalS

    split = PascalS(SHARED_DATA).split("all")
    assert len(split) == 850
    mask = split.annotation(3)["fg_mask_full"]
    assert mask.dtype == bool and mask.shape == split.full_image(3).shape[:2]
    assert split.image(3).shape == (128, 128, 3)


class _FakePascalSplit:
    """A pascal_s split of full-resolution images and bool masks (``annotation()["fg_mask_full"]``)."""

    name = "all"

    def __init__(self, images, masks):
        self.images, self.masks = images, masks

    def __len__(self):
        return len(self.images)

    def full_image(self, i):
        return self.images[i]

    def annotation(self, i):
        return {"fg_mask_full": self.masks[i]}


def _predictions(part_probs):
    return type("P", (), {"part_probs": part_probs})()


@pytest.mark.parametrize("options", [{"iou": "melas"}, {"iou": "melas", "view": "crop"},
                                     {"iou": "ganseg", "average": "mean_pr"}])
def test_pascal_protocol_scores_a_perfect_and_an_inverted_method(options):
    """On a 2-image fake split: a method that predicts the GT exactly scores ~1 on every metric;
    predicting the complement scores ~0 IoU, in every view."""
    from segbench.protocols.pascal_s import PascalSProtocol, saliency_metric_name

    gts = [np.zeros((40, 60), bool), np.zeros((50, 50), bool)]
    gts[0][10:30, 20:40] = True
    gts[1][5:45, 5:25] = True
    split = _FakePascalSplit([np.repeat(g[:, :, None] * 255, 3, axis=2).astype(np.uint8) for g in gts], gts)

    class Oracle:  # reads the mask back from the (mask-coloured) image it is shown
        def __init__(self, invert): self.invert = invert
        def predict(self, images):
            fg = (images[:, 0] > 0.5).float()
            fg = 1 - fg if self.invert else fg
            return _predictions(torch.stack([1 - fg, fg], 1))

    protocol = PascalSProtocol(options)
    name = {s: saliency_metric_name(s, protocol.options) for s in ("accuracy", "iou", "max_fbeta", "fbeta_at_0.5")}
    iou = f"fg_iou_{protocol.options['iou']}"
    perfect = {r["metric"]: r["value"] for r in protocol.score(Oracle(False), {"test": split}, progress=False).records}
    assert perfect[name["accuracy"]] > 0.97 and perfect[name["iou"]] > 0.9 and perfect[iou] > 0.9
    assert perfect[name["max_fbeta"]] > 0.9 and perfect[name["fbeta_at_0.5"]] > 0.9
    inverted = {r["metric"]: r["value"] for r in protocol.score(Oracle(True), {"test": split}, progress=False).records}
    assert inverted[name["iou"]] < 0.05 and inverted[iou] < 0.05


def test_pascal_saliency_metric_names_encode_non_default_options():
    from segbench.protocols.pascal_s import PascalSProtocol

    spec = PascalSProtocol.spec
    assert spec.version == "2"
    names = lambda **o: [m.name for m in spec.metric_specs(spec.resolve_options(o))]  # noqa: E731
    assert names() == ["saliency_accuracy", "saliency_iou", "saliency_max_fbeta", "saliency_fbeta_at_0.5",
                       "fg_iou_ganseg"]
    assert names(view="crop", average="mean_pr", iou="melas") == [
        "saliency_accuracy_crop", "saliency_iou_crop", "saliency_max_fbeta_crop_mean_pr",
        "saliency_fbeta_at_0.5_crop_mean_pr", "fg_iou_melas"]
    assert names(average="mean_pr")[2:4] == ["saliency_max_fbeta_mean_pr", "saliency_fbeta_at_0.5_mean_pr"]


def test_pascal_saliency_is_scored_uncropped_at_full_resolution():
    """Two 256 x 512 images. The method must see 128 x 256 views (shorter side 128, aspect kept);
    it predicts fg 0.8 on the left half of the view and 0.2 on the right. Upsampled x2 to the
    full-resolution mask (log-probabilities, i.e. logits), each row is 255 x 0.8, 2/3, 1/3,
    255 x 0.2 (logit(0.8) = log 4; the two inner columns mix it 3:1 -> sigmoid(+-log 2)).

    GT 1 = columns < 128, GT 2 = columns < 256. Predicted columns and (P, R):
      t < 0.2 (512):    1: (1/4, 1)        2: (1/2, 1)
      [0.2, 1/3) (257): 1: (128/257, 1)    2: (256/257, 1)
      [1/3, 2/3) (256): 1: (1/2, 1)        2: (1, 1)
      [2/3, 0.8) (255): 1: (128/255, 1)    2: (1, 255/256)
      t >= 0.8 (0):     F = 0
    Official max F: [2/3, 0.8): (F(128/255, 1) + F(1, 255/256)) / 2 = (832/1467 + 1105/1106) / 2.
    F at 0.5 = (F(1/2, 1) + 1) / 2 = 18/23; accuracy (3/4 + 1) / 2; IoU (1/2 + 1) / 2.
    average=mean_pr: F(mean P, mean R), largest on [2/3, 0.8): F(383/510, 511/512).
    """
    from segbench.protocols.pascal_s import PascalSProtocol

    masks = [np.zeros((256, 512), bool), np.zeros((256, 512), bool)]
    masks[0][:, :128] = True
    masks[1][:, :256] = True
    split = _FakePascalSplit([np.zeros((256, 512, 3), np.uint8)] * 2, masks)
    seen = []

    class HalfAndHalf:
        def predict(self, images):
            seen.append(tuple(images.shape))
            fg = torch.full(images.shape[:1] + images.shape[2:], 0.2, dtype=torch.float64)
            fg[..., :images.shape[-1] // 2] = 0.8
            return _predictions(torch.stack([1 - fg, fg], 1))

    def f(p, r):
        return (1 + Fraction(3, 10)) * p * r / (Fraction(3, 10) * p + r)

    assert f(Fraction(128, 255), 1) == Fraction(832, 1467) and f(1, Fraction(255, 256)) == Fraction(1105, 1106)
    assert (f(Fraction(1, 2), 1) + 1) / 2 == Fraction(18, 23)
    scores = PascalSProtocol({"iou": "ganseg"}).score(HalfAndHalf(), {"test": split}, progress=False)
    rows = scores.records
    got = {r["metric"]: r["value"] for r in rows}
    assert seen[0] == (2, 3, 128, 256)  # the saliency view, both images in one call
    assert got["saliency_max_fbeta"] == pytest.approx(float((Fraction(832, 1467) + Fraction(1105, 1106)) / 2),
                                                      rel=1e-12)
    assert got["saliency_fbeta_at_0.5"] == pytest.approx(18 / 23, rel=1e-12)
    assert got["saliency_accuracy"] == pytest.approx(0.875, rel=1e-12)
    assert got["saliency_iou"] == pytest.approx(0.75, rel=1e-12)
    per_image = {}
    for split_name, image_id, metric, value in scores.per_image:
        per_image.setdefault(metric, {})[image_id] = value
    assert split_name == "all" and set(per_image) == {"saliency_accuracy", "saliency_iou", "saliency_fbeta_at_0.5",
                                                      "fg_iou_ganseg"}  # not the max over thresholds
    assert per_image["saliency_accuracy"] == {"0": 0.75, "1": 1.0}
    assert per_image["saliency_iou"] == {"0": 0.5, "1": 1.0}
    assert per_image["saliency_fbeta_at_0.5"]["0"] == pytest.approx(float(f(Fraction(1, 2), 1)), rel=1e-12)
    mean_pr_scores = PascalSProtocol({"average": "mean_pr"}).score(HalfAndHalf(), {"test": split}, progress=False)
    mean_pr = {r["metric"]: r["value"] for r in mean_pr_scores.records}
    # F from averaged precision and recall is no mean over images: no per-image F at 0.5
    assert {r[2] for r in mean_pr_scores.per_image} == {"saliency_accuracy", "saliency_iou", "fg_iou_ganseg"}
    assert mean_pr["saliency_max_fbeta_mean_pr"] == pytest.approx(
        float(f(Fraction(383, 510), Fraction(511, 512))), rel=1e-12)
    assert mean_pr["saliency_accuracy"] == got["saliency_accuracy"]


def test_pascal_saliency_views_of_different_sizes_are_predicted_separately():
    from segbench.protocols.pascal_s import predict_each

    calls = []

    class Recorder:
        def predict(self, images):
            calls.append(tuple(images.shape))
            return _predictions(torch.full((len(images), 2) + tuple(images.shape[2:]), 0.5))

    views = [torch.zeros(3, 128, 170), torch.zeros(3, 170, 128), torch.zeros(3, 128, 170)]
    out = predict_each(Recorder(), views)
    assert sorted(calls) == [(1, 3, 170, 128), (2, 3, 128, 170)]
    assert [tuple(p.shape) for p in out] == [(2, 128, 170), (2, 170, 128), (2, 128, 170)]


# ----------------------------------------------------------------------------- cub_photos
@requires_shared_data("cub_birds_5902")
def test_cub_photos_splits_follow_the_flags():
    from segbench.datasets.cub_photos import CubPhotos

    data = CubPhotos(SHARED_DATA)
    sizes = {name: len(data.split(name)) for name in ("all", "train", "test")}
    assert sizes == {"all": 5902, "train": 2903, "test": 2999}
    assert set(data.split("train").paths).isdisjoint(data.split("test").paths)


def test_fid_protocol_plumbing_and_real_statistics_cache(tmp_path, monkeypatch):
    """With a cheap stand-in feature network: samples identical to the reference give FID ~ 0,
    shifted samples a large FID; the real statistics are computed once and then read from cache."""
    import segbench.feature_nets as feature_nets
    from segbench.protocols.fid import CubPhotosFid

    monkeypatch.setenv("SEGBENCH_CACHE", str(tmp_path))
    rng = np.random.default_rng(0)
    projection = rng.normal(size=(3 * 8 * 8, 16))
    calls = {"n": 0}

    def features(images_uint8, **_):
        calls["n"] += len(images_uint8)
        small = torch.nn.functional.adaptive_avg_pool2d(images_uint8.double(), 8)
        return small.reshape(len(small), -1).numpy() @ projection

    monkeypatch.setattr(feature_nets, "inception_features", features)
    images = rng.integers(0, 256, size=(100, 16, 16, 3), dtype=np.uint8)

    class Split:
        name = "all"
        def __len__(self): return 100
        def image(self, i): return images[i]

    class Generator:
        def __init__(self, shift): self.shift, self.cursor = shift, 0
        def sample(self, n, seed):
            out = torch.from_numpy(images[self.cursor:self.cursor + n]).permute(0, 3, 1, 2)
            self.cursor += n
            return (out.int() // self.shift).to(torch.uint8) if self.shift > 1 else out.contiguous()

    protocol = CubPhotosFid({"n_generated": "100"})
    same = protocol.score(Generator(1), {"reference": Split()}, batch_size=32, progress=False).records
    assert same[0]["metric"] == "fid100" and abs(same[0]["value"]) < 1e-6 and same[0]["n_eval"] == 100
    assert calls["n"] == 200  # real side once + generated side once
    darker = protocol.score(Generator(4), {"reference": Split()}, batch_size=32, progress=False).records
    assert darker[0]["value"] > 100
    assert calls["n"] == 300  # the real statistics came from the cache
    assert len(list((tmp_path / "fid_stats").glob("*.npz"))) == 1


# ----------------------------------------------------------------------------- end to end
@requires_shared_data("faces_wild68")
def test_centre_prior_on_faces_wild_end_to_end(cli, tmp_path):
    result = cli("run", "--method", "centre_prior", "--protocol", "faces_wild", "--limit", "64",
                 "--option", "regression=scops", "--out", str(tmp_path), "--no-progress")
    assert result.returncode == 0, result.stderr
    (run_dir,) = (tmp_path / "faces_wild" / "centre_prior").iterdir()
    records = json.loads((run_dir / "metrics.json").read_text())
    assert [r["metric"] for r in records] == ["landmark_err_scops_pct"]
    assert 5 < records[0]["value"] < 100 and records[0]["num_parts"] == 8


@requires_shared_data("pascal_s")
def test_centre_prior_on_pascal_s_end_to_end(cli, tmp_path):
    result = cli("run", "--method", "centre_prior", "--protocol", "pascal_s", "--limit", "24",
                 "--out", str(tmp_path), "--no-progress")
    assert result.returncode == 0, result.stderr
    (run_dir,) = (tmp_path / "pascal_s" / "centre_prior").iterdir()
    metrics = {r["metric"]: r["value"] for r in json.loads((run_dir / "metrics.json").read_text())}
    assert set(metrics) == {"saliency_accuracy", "saliency_iou", "saliency_max_fbeta", "saliency_fbeta_at_0.5",
                            "fg_iou_ganseg"}
    assert all(0 < v < 1 for v in metrics.values())
