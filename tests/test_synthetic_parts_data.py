"""Fast checks of the embedded synthetic benchmark: contract, determinism, difficulty."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from segbench.datasets.synthetic_parts import SPLIT_CODES, SyntheticParts, measure_throughput
from segbench.datasets.synthetic_render import LANDMARK_NAMES, PART_NAMES, render


@pytest.fixture(scope="module")
def test_items_64():
    split = SyntheticParts(image_size=64).split("test")
    return [split.item(i) for i in range(200)]


def test_names():
    assert PART_NAMES == ("background", "head", "torso", "left_arm", "right_arm", "left_leg", "right_leg")
    assert len(LANDMARK_NAMES) == 8 and LANDMARK_NAMES[0] == "head_top"


def test_splits_and_sizes():
    ds = SyntheticParts(image_size=32, n_train=7, n_regression_fit=5, n_test=3, seed=1)
    assert {n: len(ds.split(n)) for n in ds.SPLITS} == {"train": 7, "regression_fit": 5, "test": 3}
    assert len(ds.split("train", limit=2)) == 2
    assert ds.describe()["options"]["seed"] == 1
    with pytest.raises(IndexError):
        ds.split("test").item(3)
    defaults = SyntheticParts()
    assert [len(defaults.split(n)) for n in ("train", "regression_fit", "test")] == [2000, 500, 300]


def test_bad_options_are_user_errors():
    from segbench.benchmark.errors import UserError
    with pytest.raises(UserError):
        SyntheticParts(n_tset=3)
    with pytest.raises(UserError):
        SyntheticParts(image_size=4)


def test_determinism_and_split_independence():
    a = SyntheticParts(image_size=64, seed=3).split("train")
    b = SyntheticParts(image_size=64, seed=3).split("train")
    x, y = a.item(5), b.item(5)
    for key in x:
        np.testing.assert_array_equal(np.asarray(x[key]), np.asarray(y[key]))
    # image i does not depend on what was rendered before it
    for i in (4, 3, 2):
        b.item(i)
    np.testing.assert_array_equal(a.image(5), b.image(5))
    np.testing.assert_array_equal(a.annotation(5)["part_labels"], x["part_labels"])
    other = SyntheticParts(image_size=64, seed=3).split("test").item(5)
    assert not np.array_equal(other["image"], x["image"])
    assert not np.array_equal(SyntheticParts(image_size=64, seed=4).split("train").image(5), x["image"])
    assert not np.array_equal(a.image(6), x["image"])


@pytest.mark.parametrize("size", [32, 64, 128])
def test_shapes_dtypes_and_consistency(size):
    split = SyntheticParts(image_size=size).split("regression_fit")
    for i in range(4):
        it = split.item(i)
        assert it["image"].dtype == np.uint8 and it["image"].shape == (size, size, 3)
        assert it["part_labels"].dtype == np.int64 and it["part_labels"].shape == (size, size)
        assert it["fg_mask"].dtype == bool and it["fg_mask"].shape == (size, size)
        assert it["landmarks"].dtype == np.float32 and it["landmarks"].shape == (8, 2)
        assert it["landmark_visible"].dtype == bool and it["landmark_visible"].shape == (8,)
        assert isinstance(it["ref_length"], float) and it["ref_length"] > 0
        np.testing.assert_array_equal(it["fg_mask"], it["part_labels"] > 0)
        assert it["part_labels"].min() >= 0 and it["part_labels"].max() <= 6


def test_pose_is_resolution_independent():
    small, big = render(0, 0, 11, 32), render(0, 0, 11, 128)
    # pixel centre convention: x_px = u * size - 0.5
    np.testing.assert_allclose((small["landmarks"] + 0.5) / 32, (big["landmarks"] + 0.5) / 128, atol=1e-5)
    assert big["ref_length"] == pytest.approx(4 * small["ref_length"])


def test_all_parts_present_in_most_images(test_items_64):
    full = [len(np.unique(it["part_labels"])) == 7 for it in test_items_64]
    assert np.mean(full) > 0.9


def test_visible_landmarks_inside_frame(test_items_64):
    size = 64
    vis = np.stack([it["landmark_visible"] for it in test_items_64])
    lm = np.stack([it["landmarks"] for it in test_items_64])
    inside = np.all((lm >= -0.5) & (lm <= size - 0.5), axis=2)
    np.testing.assert_array_equal(vis, inside)
    assert vis.mean() > 0.85   # the figure stays mostly inside the frame


def test_landmarks_lie_on_their_parts(test_items_64):
    """head_top is at the head; hands/feet at the ends of their limbs (within 1.5 px)."""
    owner = {"head_top": 1, "left_hand": 3, "right_hand": 4, "left_foot": 5, "right_foot": 6}
    hits = {name: [] for name in owner}
    for it in test_items_64:
        rows, cols = np.mgrid[:64, :64]
        for name, label in owner.items():
            k = LANDMARK_NAMES.index(name)
            if not it["landmark_visible"][k]:
                continue
            x, y = it["landmarks"][k]
            near = (cols - x) ** 2 + (rows - y) ** 2 <= 1.5 ** 2
            hits[name].append(bool((it["part_labels"][near] == label).any()))
    assert all(len(h) > 100 for h in hits.values())
    assert np.mean(hits["head_top"]) > 0.97
    # a hand can be hidden behind the head, a foot behind the other leg: allow a few
    assert all(np.mean(h) > 0.85 for h in hits.values())


def test_objects_spread_over_the_frame(test_items_64):
    rows, cols = np.mgrid[:64, :64]
    centres = np.array([[cols[it["fg_mask"]].mean(), rows[it["fg_mask"]].mean()]
                        for it in test_items_64]) / 64
    assert np.all(np.abs(centres.mean(0) - 0.5) < 0.1)
    assert np.all(centres.std(0) > 0.10)


def test_image_independent_baselines_do_badly(test_items_64):
    rows, cols = np.mgrid[:64, :64]
    frac = np.mean([it["fg_mask"].mean() for it in test_items_64])
    for radius in (np.sqrt(frac / np.pi) * 64, 0.2 * 64, 0.3 * 64):
        disc = (cols - 31.5) ** 2 + (rows - 31.5) ** 2 <= radius ** 2
        iou = np.mean([(disc & it["fg_mask"]).sum() / (disc | it["fg_mask"]).sum() for it in test_items_64])
        assert iou < 0.35
    lm = np.stack([it["landmarks"] for it in test_items_64])
    ref = np.array([it["ref_length"] for it in test_items_64])
    err = np.linalg.norm(lm - lm.mean(0), axis=2) / ref[:, None]
    assert err.mean() > 0.5   # the best fixed landmark layout is off by half a torso length or more


def test_fit_images_are_float_tensors_only():
    fit = SyntheticParts(image_size=32, n_train=4).split("train").fit_images()
    assert len(fit) == 4
    x = fit[2]
    assert isinstance(x, torch.Tensor) and x.dtype == torch.float32 and x.shape == (3, 32, 32)
    assert 0.0 <= x.min() and x.max() <= 1.0
    with pytest.raises(IndexError):
        fit[4]


def test_batches_stack_annotations():
    batch = next(SyntheticParts(image_size=32, n_test=5).split("test").batches(4))
    assert batch["images"].shape == (4, 3, 32, 32)
    assert batch["part_labels"].shape == (4, 32, 32) and batch["landmarks"].shape == (4, 8, 2)


def test_split_codes_fixed():
    assert SPLIT_CODES == {"train": 0, "regression_fit": 1, "test": 2}


def test_measure_throughput_positive():
    rate = measure_throughput(64, n=100)
    assert isinstance(rate, float) and rate > 0


def test_renderer_does_not_import_torch():
    import subprocess
    import sys
    from pathlib import Path
    code = "import sys, datasets.synthetic_render as r; r.render(0, 0, 0, 32); assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])
