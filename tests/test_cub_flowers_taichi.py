"""CUB, Flowers and Taichi loaders on generated fixtures in their official layouts, the documented
errors on broken copies, the split logic on the REAL annotation files, ``prepare``, and the
protocols (cub_fg, flowers_fg, cub_kp, taichi) checked against hand computations and run end to
end through the CLI."""
import re
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from segbench.benchmark.errors import UserError
from segbench.datasets.cub import CUB, read_images_txt, read_part_locs, read_split_labels, split_indices
from segbench.datasets.fg_views import GansegAugmentation, augment_image
from segbench.datasets.flowers import Flowers, background_from_segmim, read_setid
from segbench.datasets.realformat import CountMismatchWarning, read_table
from segbench.datasets.taichi import Taichi, read_keypoint_pickle
from tests.conftest import SHARED_DATA, requires_shared_data, run_cli_here
from tests.fixtures import cub as fx_cub
from tests.fixtures import flowers as fx_flowers
from tests.fixtures import taichi as fx_taichi

REAL = SHARED_DATA / "annotations"
pytestmark = pytest.mark.filterwarnings("ignore::segbench.datasets.realformat.CountMismatchWarning")
FIXTURES = {"cub": (fx_cub.make_cub, CUB, fx_cub.BROKEN), "flowers": (fx_flowers.make_flowers, Flowers,
                                                                       fx_flowers.BROKEN),
            "taichi": (fx_taichi.make_taichi, Taichi, fx_taichi.BROKEN)}


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """Each fixture generated once; tests that write (cache, breakage) take a copy."""
    base = tmp_path_factory.mktemp("fixtures")
    return {name: make(base / name) for name, (make, _, _) in FIXTURES.items()}


def copy_of(pristine, name, tmp_path):
    return shutil.copytree(pristine[name], tmp_path / name)


# ---------------------------------------------------------------- rules on hand-made pixels

def test_flowers_background_rule_on_hand_made_pixels():
    pixels = np.array([[[0, 5, 5], [5, 0, 5], [5, 5, 254], [0, 0, 254]],
                       [[5, 5, 253], [1, 1, 255], [255, 255, 255], [200, 120, 60]]], np.uint8)
    expected_background = [[True, True, True, True], [False, False, False, False]]
    assert background_from_segmim(pixels).tolist() == expected_background
    with pytest.raises(ValueError):
        background_from_segmim(pixels[..., :2])


def test_cub_mask_is_grey_value_above_127_5(pristine):
    split = CUB(pristine["cub"], image_size=16, annotations="masks").split("test")  # item 0 = image 9, 16 x 16
    fg = split.annotation(0)["fg_mask"]
    assert fg.dtype == bool and fg.shape == (16, 16)
    assert sorted(map(tuple, np.argwhere(fg).tolist())) == fx_cub.MASK_FOREGROUND_9
    full = split.full_fg_mask(0)
    assert full[2, 3] == pytest.approx(128 / 255) and full[2, 4] == pytest.approx(127 / 255)
    assert sorted(map(tuple, np.argwhere(full > 0.5).tolist())) == fx_cub.MASK_FOREGROUND_9
    assert "landmarks" not in split.annotation(0)  # annotations="masks" reads no part file


# ---------------------------------------------------------------- loaders on the fixtures

def test_cub_split_membership_and_count_warning(pristine):
    data = CUB(pristine["cub"], image_size=16)
    with pytest.warns(CountMismatchWarning, match=r"cub split 'test': found 4 images, the documented size is 1,000"):
        data.split("test")
    for name, ids in fx_cub.SPLIT_IDS.items():
        assert data.members(name).keys == [fx_cub.relpath(i) for i in ids]
    image = data.split("val").image(1)  # image 8, whole image resized with PIL bilinear
    with Image.open(pristine["cub"] / "images" / fx_cub.relpath(8)) as im:
        np.testing.assert_array_equal(image, np.asarray(im.convert("RGB").resize((16, 16), Image.BILINEAR)))


def test_cub_keypoints_scaled_with_visibility_and_edge_reference(pristine):
    ann = CUB(pristine["cub"], image_size=16, annotations="keypoints").split("train").annotation(0)  # 24 x 32
    assert ann["landmarks"].shape == (15, 2) and ann["landmarks"].dtype == np.float32
    np.testing.assert_allclose(ann["landmarks"][1], [8.0, 8.0])  # beak (16, 12) * (16/32, 16/24)
    np.testing.assert_allclose(ann["landmarks"][0], [(8 + 3) / 2, (6 + 5) * 16 / 24], rtol=1e-6)  # back
    assert ann["landmark_visible"].tolist() == [p == 2 or p % 2 == 1 for p in range(1, 16)]
    assert ann["ref_length"] == 16.0
    np.testing.assert_allclose(ann["bbox"], [4.0, 4.0, 8.0, 8.0])  # (8, 6, 16, 12) scaled
    assert "fg_mask" not in ann


def test_ganseg_augmentation_only_on_the_train_fit_view(pristine):
    data = CUB(pristine["cub"], image_size=16, augment="ganseg")
    fit, test_fit = data.split("train").fit_images(), data.split("test").fit_images()
    assert len(fit) == 18 and len(test_fit) == 4  # 3x repeat of the 6 training images only
    torch.manual_seed(0)
    a = torch.stack([fit[i] for i in (0, 6, 12)])  # three draws on image 1
    torch.manual_seed(0)
    b = torch.stack([fit[i] for i in (0, 6, 12)])
    assert torch.equal(a, b) and a.shape == (3, 3, 16, 16) and 0 <= a.min() and a.max() <= 1
    assert not torch.equal(a[0], a[1]) or not torch.equal(a[1], a[2])  # fresh random crops
    plain = torch.from_numpy(data.split("train").image(0)).permute(2, 0, 1).float() / 255
    assert torch.equal(test_fit[0], torch.from_numpy(data.split("test").image(0)).permute(2, 0, 1).float() / 255)
    whole = GansegAugmentation(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0))  # the crop is the whole image
    outcomes = {bool(torch.allclose(augment_image(plain.clone(), whole), plain.flip(-1), atol=1e-6))
                for _ in range(12)}
    assert outcomes == {True, False}  # flipped about half the time, otherwise unchanged
    assert torch.allclose(augment_image(plain.clone(), GansegAugmentation(flip_p=1.0, crop=False)), plain.flip(-1))
    with pytest.raises(UserError, match="augment='flip'"):
        CUB(pristine["cub"], augment="flip")


def test_ganseg_training_reads_fresh_crops_every_epoch_with_the_image_cache(pristine):
    """Audit row 9: the uint8 cache must hold the un-augmented images and the crop be redrawn
    per read; caching the augmented items froze one crop per item (12 distinct in 20 epochs)."""
    from segbench.methods.common.images import EpochOrder, ImageStore
    from segbench.methods.ganseg.train import real_batch

    fit = CUB(pristine["cub"], image_size=64, augment="ganseg").split("train").fit_images()
    store = ImageStore(fit, 64, max_mb=64)
    assert store.cache is not None and store.cache.shape[0] == 6  # the 6 base images, not 18 draws
    torch.manual_seed(0)
    order = EpochOrder(len(store), torch.Generator().manual_seed(0))
    seen = {}
    for _ in range(20):  # 20 epochs of 18 items
        for _ in range(3):
            batch = real_batch(store, order, 6, hflip=False)
            for image in batch:
                seen[image.numpy().tobytes()] = True
    # 360 reads; frozen draws would give at most 18 distinct images (6 images x 3 repeats)
    assert len(seen) > 250


def test_flowers_splits_swap_trnid_and_tstid_and_masks_follow_the_rule(pristine):
    data = Flowers(pristine["flowers"], image_size=16)
    for name, ids in fx_flowers.SPLIT_IDS.items():
        assert data.members(name).keys == [f"jpg/image_{i:05d}.jpg" for i in ids]
    test = data.split("test")
    np.testing.assert_array_equal(test.full_fg_mask(0) > 0.5, fx_flowers.expected_foreground(9))
    val = data.split("val")  # image 8 is 16 x 16: at image_size 16 the resize changes nothing
    np.testing.assert_array_equal(val.annotation(1)["fg_mask"], fx_flowers.expected_foreground(8))


def test_taichi_rows_are_keyed_by_split_and_file_name(pristine):
    data = Taichi(pristine["taichi"], image_size=128)
    fit, test = data.split("regression_fit"), data.split("test")
    i_fit, i_test = fx_taichi.TRAIN_NAMES.index("00001.png"), fx_taichi.TEST_NAMES.index("00001.png")
    assert data.frame_key("regression_fit", i_fit) == ("regression_fit", "00001.png")
    assert data.frame_key("test", i_test) == ("test", "00001.png")
    a, b = fit.annotation(i_fit), test.annotation(i_test)
    np.testing.assert_array_equal(a["keypoints_256"], fx_taichi.keypoints("regression_fit", i_fit, "00001.png"))
    np.testing.assert_array_equal(b["keypoints_256"], fx_taichi.keypoints("test", i_test, "00001.png"))
    assert not np.array_equal(a["keypoints_256"], b["keypoints_256"])
    assert not np.array_equal(fit.image(i_fit), test.image(i_test))  # other pixels under the same name
    # -1 marks missing: kept in keypoints_256 and landmarks, the keypoint is not visible
    assert b["keypoints_256"][5].tolist() == [-1, -1] and b["landmarks"][5].tolist() == [-1, -1]
    assert not b["landmark_visible"][5] and b["landmark_visible"][4]
    np.testing.assert_allclose(b["landmarks"][4], b["keypoints_256"][4] / 2)
    c = fit.annotation(fx_taichi.TRAIN_NAMES.index("00002.png"))
    assert c["keypoints_256"][7].tolist()[1] == -1 and c["landmarks"][7][0] == c["keypoints_256"][7][0] / 2
    top, left, bottom, right = (v // 2 for v in fx_taichi.MASK_BOX)
    expected = np.zeros((128, 128), bool)
    expected[top:bottom, left:right] = True
    np.testing.assert_array_equal(b["fg_mask"], expected)
    assert "fg_mask" not in a


def test_taichi_gan_frames_and_video_count_warning(pristine):
    data = Taichi(pristine["taichi"], augment="ganseg")
    with pytest.warns(CountMismatchWarning, match=r"found 3 video folders, the documented number is 3,049"):
        train = data.split("train")
    assert data.members("train").keys[:4] == ["train/aBcD-001.mp4/0000000.png", "train/aBcD-001.mp4/0000001.png",
                                              "train/aBcD-001.mp4/0000002.png", "train/aBcD-002.mp4/0000000.png"]
    assert len(train) == 7 and len(train.fit_images()) == 7  # flip only, no repeat
    report = data.verify()
    assert report["splits"]["train"] == {**report["splits"]["train"], "found": 3, "expected": 3049,
                                         "frames": 7, "unit": "videos", "count_ok": False}


# ---------------------------------------------------------------- broken copies

BROKEN_CASES = [(name, case) for name, (_, _, broken) in FIXTURES.items() for case in broken]


@pytest.mark.parametrize("dataset,case", BROKEN_CASES, ids=[f"{d}-{c}" for d, c in BROKEN_CASES])
def test_broken_fixture_fails_with_the_documented_error(pristine, tmp_path, dataset, case):
    root = copy_of(pristine, dataset, tmp_path)
    _, cls, broken = FIXTURES[dataset]
    breaker, fragment, stage = broken[case]
    breaker(root)
    with pytest.raises(UserError) as info:
        data = cls(root)
        if stage in ("split", "decode"):
            data.verify()
        elif stage == "mask":
            data.split("test").annotation(0)
        elif stage == "full_mask":
            data.split("test").full_fg_mask(1)
    message = str(info.value)
    assert fragment.format(root=root) in message, message
    assert "\n" not in message
    if stage != "init":  # the constructor must not be the one failing for later-stage breakage
        cls(root)


# ---------------------------------------------------------------- the real annotation files

@requires_shared_data("annotations/cub")
def test_real_cub_split_and_part_files():
    ids, paths = read_images_txt(REAL / "cub" / "images.txt")
    assert len(ids) == 11788 and ids.tolist() == list(range(1, 11789))
    assert paths[0] == "001.Black_footed_Albatross/Black_Footed_Albatross_0046_18.jpg"
    splits = split_indices(read_split_labels(REAL / "cub" / "train_val_test_split.txt", ids))
    assert {k: len(v) for k, v in splits.items()} == {"train": 10000, "val": 788, "test": 1000}
    assert sum(len(v) for v in splits.values()) == 11788
    xy, visible = read_part_locs(REAL / "cub" / "parts" / "part_locs.txt", ids)
    assert xy.shape == (11788, 15, 2) and visible.shape == (11788, 15)
    assert visible[0].tolist()[:3] == [False, True, False] and xy[0, 1].tolist() == [312.0, 182.0]
    assert (xy[~visible] == 0).all() and 0.7 < visible.mean() < 0.9
    assert len(read_table(REAL / "cub" / "bounding_boxes.txt", 4)) == 11788


@requires_shared_data("annotations/flowers")
def test_real_flowers_setid():
    ids = read_setid(REAL / "flowers" / "setid.mat")
    assert {k: len(v) for k, v in ids.items()} == {"train": 6149, "val": 1020, "test": 1020}
    together = np.concatenate(list(ids.values()))
    assert len(set(together.tolist())) == 8189 and together.min() == 1 and together.max() == 8189


@requires_shared_data("annotations/taichi")
def test_real_taichi_pickles():
    train_names, train = read_keypoint_pickle(REAL / "taichi" / "taichi_train_gt.pkl")
    test_names, test = read_keypoint_pickle(REAL / "taichi" / "taichi_test_gt.pkl")
    assert train.shape == (5000, 18, 2) and test.shape == (300, 18, 2)
    assert (train == -1).any() and (test == -1).any()
    assert len(set(train_names) & set(test_names)) == 300  # every test name also names a train frame


# ---------------------------------------------------------------- prepare and the protocols

@pytest.mark.parametrize("dataset", list(FIXTURES))
def test_prepare_verifies_caches_and_is_a_no_op_the_second_time(pristine, tmp_path, capsys, dataset):
    """The CLI itself once in a subprocess (cub), in-process through ``benchmark.cli.main`` for the
    others (same code, without a second torch start-up)."""
    from segbench.benchmark.cli import main
    root = copy_of(pristine, dataset, tmp_path)
    argv = ["prepare", dataset, "--data-root", str(root), "--no-progress", "--workers", "1"]
    if dataset == "cub":
        first = run_cli_here(*argv)
        assert first.returncode == 0, first.stderr
        out = first.stdout
    else:
        assert main(argv) == 0
        out = capsys.readouterr().out
    assert re.search(r"test\s+4\s+\S+\s+<- differs", out), out
    assert "cache test: wrote 4 images" in out
    if dataset == "taichi":  # the GAN frames are counted in videos
        assert re.search(r"train\s+3\s+3,049\s+\(videos; 7 frames\)", out), out
    assert main(argv) == 0
    assert "nothing to do" in capsys.readouterr().out
    data = FIXTURES[dataset][1](root)
    split = data.split("test")
    assert split.cached is not None and np.array_equal(split.image(0), data.load_image(split.paths[0]))


def test_prepare_prints_one_line_error_on_a_broken_copy(pristine, tmp_path, capsys):
    from segbench.benchmark.cli import main
    root = copy_of(pristine, "flowers", tmp_path)
    fx_flowers.BROKEN["corrupt_image"][0](root)
    assert main(["prepare", "flowers", "--data-root", str(root), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"corrupt image {root}/jpg/image_00012.jpg" in err and err.strip().count("\n") == 0


def centre_prior(num_parts):
    from segbench.methods import METHODS
    cls = METHODS.get("centre_prior")
    return cls(cls.config_for("smoke", {"num_parts": num_parts}))


def test_cub_fg_ganseg_matches_a_hand_computed_iou(pristine):
    from segbench.protocols.foreground import CubForegroundProtocol
    method = centre_prior(8)
    data = CUB(pristine["cub"], **CubForegroundProtocol.spec.dataset_options)
    scores = CubForegroundProtocol({}).score(method, {"test": data.split("test")}, batch_size=3, progress=False)
    rows = scores.records
    fg = (method.predict(torch.zeros(1, 3, 128, 128)).part_probs[0].argmax(0) != 0).numpy()
    ious = []
    for i in fx_cub.SPLIT_IDS["test"]:
        gt = np.asarray(Image.fromarray(fx_cub.mask_array(i)).resize((128, 128), Image.BILINEAR)) > 127.5
        ious.append((fg & gt).sum() / ((fg | gt).sum() + 1e-6))
    assert rows[0] == {"metric": "fg_iou_ganseg", "split": "test", "value": pytest.approx(np.mean(ious)), "n_eval": 4}
    assert [r["metric"] for r in rows] == ["fg_iou_ganseg", "saliency_accuracy", "saliency_max_fbeta"]
    # per-image IoUs keyed by the image's path in the CUB folder; max F-beta has none
    iou_rows = [r for r in scores.per_image if r[2] == "fg_iou_ganseg"]
    assert [r[1] for r in iou_rows] == [fx_cub.relpath(i) for i in fx_cub.SPLIT_IDS["test"]]
    np.testing.assert_allclose([r[3] for r in iou_rows], ious, rtol=1e-9)
    assert {r[2] for r in scores.per_image} == {"fg_iou_ganseg", "saliency_accuracy"}


@pytest.mark.parametrize("variant", ["redo", "melas"])
def test_flowers_fg_other_variants_use_the_full_resolution_views(pristine, variant):
    from segbench.protocols.foreground import FlowersForegroundProtocol
    from segbench.protocols.metrics.iou import fg_iou, prepare_image, summarise_fg_iou
    method = centre_prior(8)
    split = Flowers(pristine["flowers"]).split("test")
    rows = FlowersForegroundProtocol({"iou": variant}).score(method, {"test": split}, batch_size=3,
                                                             progress=False).records
    masks = [fx_flowers.expected_foreground(i).astype(np.float32) for i in fx_flowers.SPLIT_IDS["test"]]
    views = torch.stack([prepare_image(split.full_image(i), variant) for i in range(4)])
    expected = summarise_fg_iou(variant, fg_iou(variant, method.predict(views).part_probs, masks))
    assert rows[0]["metric"] == f"fg_iou_{variant}" and rows[0]["value"] == pytest.approx(expected)


def test_taichi_mae_of_a_constant_predictor_is_the_mean_predictor_error(pristine):
    from segbench.protocols.taichi import TaichiProtocol
    method = centre_prior(10)
    data = Taichi(pristine["taichi"], image_size=128)
    scores = TaichiProtocol({}).score(method, {"regression_fit": data.split("regression_fit"),
                                               "test": data.split("test")}, batch_size=4, progress=False)
    rows = scores.records
    fit = np.stack([fx_taichi.keypoints("regression_fit", i, n) for i, n in enumerate(fx_taichi.TRAIN_NAMES)])
    test = np.stack([fx_taichi.keypoints("test", i, n) for i, n in enumerate(fx_taichi.TEST_NAMES)])
    expected = 0.0  # constant features: OLS with intercept predicts the mean of the present fit values
    for k in range(18):
        for a in range(2):
            f, t = fit[:, k, a], test[:, k, a]
            expected += np.abs(f[f != -1].mean() - t[t != -1]).mean()
    values = {r["metric"]: r["value"] for r in rows}
    assert values["taichi_mae_sum36"] == pytest.approx(expected, rel=1e-9)
    fg = (method.predict(torch.zeros(1, 3, 128, 128)).part_probs[0].argmax(0) != 0).numpy()
    gt = np.zeros((128, 128), bool)
    top, left, bottom, right = (v // 2 for v in fx_taichi.MASK_BOX)
    gt[top:bottom, left:right] = True
    assert values["fg_iou_ganseg"] == pytest.approx((fg & gt).sum() / ((fg | gt).sum() + 1e-6))
    # the MAE (a sum of per-target means) has no per-image values; the IoU has one per test frame
    assert [(r[1], r[2]) for r in scores.per_image] == [(f"taichi-256/test/{n}", "fg_iou_ganseg")
                                                        for n in fx_taichi.TEST_NAMES]


def test_cub_kp_constant_predictor_gives_the_ridge_mean_error(pristine):
    from segbench.protocols.cub_kp import CubKeypointProtocol
    from segbench.protocols.metrics.centres import part_centres
    method = centre_prior(8)
    data = CUB(pristine["cub"], image_size=128, annotations="keypoints")
    train, test = data.split("train"), data.split("test")
    scores = CubKeypointProtocol({}).score(method, {"regression_fit": train, "test": test}, batch_size=4,
                                           progress=False)
    rows = scores.records
    x = part_centres(method.predict(torch.zeros(1, 3, 128, 128)).part_probs.numpy())[0].reshape(-1)
    fit = [train.annotation(i) for i in range(len(train))]
    tst = [test.annotation(i) for i in range(len(test))]
    errors = []
    for lm in range(15):  # identical rows: X^T X has rank 1, so the ridge fallback (lambda = 1) applies
        ys = np.array([a["landmarks"][lm] for a in fit if a["landmark_visible"][lm]], np.float64)
        pred = (x @ x) * ys.sum(axis=0) / (len(ys) * (x @ x) + 1.0)
        errs = [np.linalg.norm(pred - a["landmarks"][lm]) / 128 for a in tst if a["landmark_visible"][lm]]
        if len(ys) and errs:
            errors.append(np.mean(errs))
    assert rows[0]["metric"] == "kp_err_edge_pct" and rows[0]["n_eval"] == 4
    assert scores.per_image == []  # a mean over landmarks, not over images
    assert rows[0]["value"] == pytest.approx(100 * np.mean(errors), rel=1e-6)


@pytest.mark.parametrize("protocol,dataset,option", [("cub_fg", "cub", "iou=melas"), ("flowers_fg", "flowers", None),
                                                     ("cub_kp", "cub", None), ("taichi", "taichi", None)])
def test_centre_prior_runs_end_to_end_on_each_protocol(pristine, tmp_path, protocol, dataset, option):
    args = ["run", "--method", "centre_prior", "--protocol", protocol, "--data-root", str(pristine[dataset]),
            "--preset", "smoke", "--seed", "0", "--limit", "6", "--out", str(tmp_path / "runs"), "--no-progress"]
    result = run_cli_here(*args, *(["--option", option] if option else []))
    assert result.returncode == 0, result.stderr
    metric = {"cub_fg": "fg_iou_melas", "flowers_fg": "fg_iou_ganseg", "cub_kp": "kp_err_edge_pct",
              "taichi": "taichi_mae_sum36"}[protocol]
    assert metric in result.stdout
    assert list((tmp_path / "runs" / protocol / "centre_prior").glob("*/metrics.json"))
