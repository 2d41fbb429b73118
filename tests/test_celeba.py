"""CelebA loaders on generated fixtures in the official layout, their errors on broken copies,
``prepare`` and its cache, the MAFL split files of the real dataset, and an end-to-end run."""
import json
import re
import shutil
import warnings

import numpy as np
import pytest
from PIL import Image

from segbench.benchmark.errors import UserError
from segbench.datasets.celeba import CelebAAligned, CelebAWild, keep_face_area, scale_landmarks
from segbench.datasets.realformat import CountMismatchWarning, read_name_list, read_table
from tests.conftest import SHARED_DATA, requires_shared_data, run_cli, run_cli_here
from tests.fixtures import celeba as fx

REAL = SHARED_DATA / "annotations" / "celeba"


@pytest.fixture
def root(tmp_path):
    return fx.make_celeba(tmp_path / "celeba")


# The fixture's split sizes differ from the documented ones: the warning is expected (and
# checked where it matters with pytest.warns).
pytestmark = pytest.mark.filterwarnings("ignore::segbench.datasets.realformat.CountMismatchWarning")


# ---------------------------------------------------------------- rules

def test_face_area_filter_keeps_exactly_thirty_percent():
    image_hw = np.array([[40, 30], [50, 20], [100, 100], [100, 100]])
    bbox_wh = np.array([[18, 20], [13, 23], [50, 60], [59, 50]])  # 360/1200, 299/1000, 3000/10000, 2950/10000
    assert keep_face_area(bbox_wh, image_hw).tolist() == [True, False, True, False]


def test_scale_landmarks_by_width_and_height():
    points = np.array([[[10.0, 20.0], [30.0, 40.0]]])
    out = scale_landmarks(points, np.array([[80, 64]]), 128)  # H=80, W=64: x * 2, y * 1.6
    np.testing.assert_allclose(out, [[[20.0, 32.0], [60.0, 64.0]]], rtol=1e-6)


# ---------------------------------------------------------------- loaders on the fixture

def test_wild_splits_follow_lists_and_filter(root):
    with pytest.warns(CountMismatchWarning, match=r"celeba_wild split 'train': found 5 images, the documented "
                                                  r"size is 45,609"):
        data = CelebAWild(root)
        split = data.split("train")
    for name, names in fx.WILD_SPLITS.items():
        assert data.split_names(name) == names
    assert len(split) == 5 and data.split("test").paths[0] == root / "img_celeba" / "000011.jpg"


def test_wild_landmarks_scaled_to_128(root):
    row = "000001.jpg   11   17   19   17   15   21   12   25   18   25"
    assert row in (root / "list_landmarks_celeba.txt").read_text()
    ann = CelebAWild(root).split("train").annotation(0)  # 000001: W=30, H=40 -> x*128/30, y*3.2
    np.testing.assert_allclose(ann["landmarks"], [[46.933333, 54.4], [81.066667, 54.4], [64.0, 67.2],
                                                  [51.2, 80.0], [76.8, 80.0]], rtol=1e-6)
    assert ann["landmarks"].dtype == np.float32 and ann["landmark_visible"].all()
    assert ann["ref_length"] == pytest.approx(8 * 128 / 30)


def test_wild_image_is_whole_image_resized(root):
    image = CelebAWild(root).split("test").image(1)
    with Image.open(root / "img_celeba" / "000012.jpg") as im:
        expected = np.asarray(im.convert("RGB").resize((128, 128), Image.Resampling.BILINEAR))
    assert image.dtype == np.uint8 and image.shape == (128, 128, 3)
    np.testing.assert_array_equal(image, expected)


def test_aligned_splits_landmarks_and_train_list_option(root):
    data = CelebAAligned(root)
    assert {s: data.split_names(s) for s in data.SPLITS} == fx.ALIGNED_SPLITS
    ann = data.split("train").annotation(0)  # 000001 at 178x218: (69,109), (106,113) -> x*128/178, y*128/218
    np.testing.assert_allclose(ann["landmarks"][:2], [[49.617978, 64.0], [76.224719, 66.348624]], rtol=1e-6)
    assert ann["ref_length"] == pytest.approx(np.hypot(37 * 128 / 178, 4 * 128 / 218), rel=1e-6)
    other = CelebAAligned(root, train_list="all_minus_mafl")
    assert other.split_names("train") == fx.ALIGNED_ALL_MINUS_MAFL
    assert other.expected_size("train") == 182599
    with pytest.raises(UserError, match="train_list='mafl'"):
        CelebAAligned(root, train_list="mafl")


def test_layout_found_from_parent_and_in_official_subfolders(root):
    assert CelebAWild(root.parent).base == root  # --data-root may name the parent
    (root / "Anno").mkdir()
    for name in ("list_bbox_celeba.txt", "list_landmarks_celeba.txt", "list_imsize_celeba.txt"):
        shutil.move(root / name, root / "Anno" / name)
    (root / "Img").mkdir()
    shutil.move(root / "img_celeba", root / "Img" / "img_celeba")
    data = CelebAWild(root)
    assert data.split_names("test") == fx.WILD_SPLITS["test"] and data.split("test").image(0).shape == (128, 128, 3)


def test_fit_mirror_doubles_the_fit_view_only(root):
    data = CelebAWild(root, fit_mirror=True)
    fit = data.split("train").fit_images()
    assert len(fit) == 10
    np.testing.assert_array_equal(fit[5].numpy(), fit[0].flip(-1).numpy())
    assert len(data.split("test").fit_images()) == 2  # evaluation splits are never mirrored
    assert len(CelebAWild(root).split("train").fit_images()) == 5


def test_no_data_root_names_the_flag_and_variable():
    with pytest.raises(UserError, match=r"no data root; pass --data-root DIR or set \$SEGBENCH_DATA"):
        CelebAWild(None)


# ---------------------------------------------------------------- broken copies

@pytest.mark.parametrize("variant", sorted(fx.BROKEN))
def test_broken_fixture_gives_one_line_error(root, variant):
    breaker, fragment, dataset, stage = fx.BROKEN[variant]
    breaker(root)
    cls = {"celeba_wild": CelebAWild, "celeba_aligned": CelebAAligned}[dataset]
    pattern = re.escape(fragment.format(root=root))
    if stage == "init":  # the constructor checks presence and parses the lists
        with pytest.raises(UserError, match=pattern) as info:
            cls(root)
    elif stage == "decode":  # verify() decodes first, middle and last image of each split
        with pytest.raises(UserError, match=pattern) as info:
            cls(root).verify()
    else:  # only prepare() decodes every image
        data = cls(root)
        data.verify()
        with pytest.raises(UserError, match=pattern) as info:
            data.prepare()
    assert "\n" not in str(info.value)
    assert not list(root.glob(".segbench_cache/*/*.partial")), "a failed prepare leaves no partial file"


# ---------------------------------------------------------------- prepare and the cache

def test_prepare_builds_cache_then_is_a_no_op(root):
    data = CelebAWild(root)
    report = data.verify()
    assert report["splits"]["train"] == {"found": 5, "expected": 45609, "count_ok": False, "cache": None}
    first = data.prepare()
    assert {r["action"] for r in first.values()} == {"cached"}
    cache_file = root / ".segbench_cache" / "celeba_wild_128px" / "train.npy"
    mtime = cache_file.stat().st_mtime_ns
    second = CelebAWild(root).prepare()
    assert {r["action"] for r in second.values()} == {"up to date"} and cache_file.stat().st_mtime_ns == mtime
    manifest = json.loads((cache_file.parent / "manifest.json").read_text())
    assert manifest["splits"]["test"]["count"] == 2 and manifest["splits"]["train"]["expected"] == 45609

    cached = CelebAWild(root).split("train")
    decoded = CelebAWild(root, use_cache=False).split("train")
    assert cached.cached is not None and decoded.cached is None
    for i in range(len(cached)):
        np.testing.assert_array_equal(cached.image(i), decoded.image(i))
    assert cached.image(0).flags.writeable
    assert CelebAWild(root).prepare(force=True)["test"]["action"] == "cached"


def test_cache_of_other_files_is_not_used(root):
    CelebAWild(root).prepare()
    listed = root / "MAFL" / "testing.txt"
    listed.write_text(listed.read_text().replace("000012.jpg", "000003.jpg"))  # a different test list
    data = CelebAWild(root)
    assert data.split("test").cached is None and data.split("train").cached is not None
    assert data.prepare(["test"])["test"]["action"] == "cached"


def test_unwritable_data_folder_caches_under_segbench_cache(root, tmp_path, monkeypatch):
    monkeypatch.setenv("SEGBENCH_CACHE", str(tmp_path / "cache_home"))
    (root / ".segbench_cache").write_text("")  # a file where the cache folder would go: not writable
    report = CelebAWild(root).prepare(["test"])
    assert report["test"]["path"].startswith(str(tmp_path / "cache_home" / "realformat"))
    assert CelebAWild(root).split("test").cached is not None


def test_cli_prepare_prints_counts_and_errors(root, capsys):
    ok = run_cli_here("prepare", "celeba_wild", "--data-root", str(root.parent), "--no-progress", "--workers", "1")
    assert ok.returncode == 0, ok.stderr
    assert re.search(r"train\s+5\s+45,609\s+<- differs from the documented size", ok.stdout)
    assert "cache test: wrote 2 images" in ok.stdout
    from segbench.benchmark.cli import main  # the same entry point, in-process (no second torch import)
    (root / "list_bbox_celeba.txt").unlink()
    assert main(["prepare", "celeba_wild", "--data-root", str(root), "--no-progress"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith(f"error: missing file {root}/list_bbox_celeba.txt") and err.count("\n") == 1
    assert main(["prepare", "celeba_wlid", "--data-root", str(root)]) == 2
    assert "did you mean 'celeba_wild'" in capsys.readouterr().err


def test_prepare_function_reports_no_op(root):
    from segbench.benchmark.prepare import prepare_dataset
    lines = []
    assert prepare_dataset("celeba_aligned", str(root), verify_only=True, echo=lines.append)["prepare"] == {}
    assert not (root / ".segbench_cache").exists()
    prepare_dataset("celeba_aligned", str(root), workers=2, progress=False, echo=lines.append)
    prepare_dataset("celeba_aligned", str(root), workers=2, progress=False, echo=lines.append)
    assert lines[-1] == "nothing to do: the cache already matches (use --force to rebuild)"
    assert any(re.search(r"test\s+3\s+1,000", line) for line in lines)
    with pytest.raises(UserError, match="synthetic_parts is not read from an official layout"):
        prepare_dataset("synthetic_parts", str(root), echo=lines.append)


# ---------------------------------------------------------------- the real MAFL split files

@requires_shared_data("annotations/celeba")
def test_real_mafl_lists_and_image_sizes():
    assert len(read_name_list(REAL / "MAFL" / "training.txt")) == 19000
    assert len(read_name_list(REAL / "MAFL" / "testing.txt")) == 1000
    training = read_name_list(REAL / "MAFL" / "celebA_training.txt")
    assert len(training) == 161962
    sizes = read_table(REAL / "list_imsize_celeba.txt", 2)
    assert len(sizes) == 202599 and sizes.names[0] == "000001.jpg"
    np.testing.assert_array_equal(sizes.rows(["000001.jpg"]), [[687, 409]])  # height first


@requires_shared_data("annotations/celeba")
def test_real_lists_give_documented_aligned_split_sizes(tmp_path):
    """Real MAFL lists + a landmark table covering all 202,599 images: the aligned splits have
    exactly the documented sizes, so no count warning is raised."""
    base = tmp_path / "celeba"
    shutil.copytree(REAL / "MAFL", base / "MAFL")
    (base / "img_align_celeba").mkdir()
    names = read_table(REAL / "list_imsize_celeba.txt", 2).names
    rows = "\n".join(f"{n} 69 109 106 113 77 142 73 152 108 154" for n in names)
    (base / "list_landmarks_align_celeba.txt").write_text(f"{len(names)}\n{fx.LANDMARK_HEADER}\n{rows}\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error", CountMismatchWarning)
        data = CelebAAligned(base)
        sizes = {s: len(data.split(s)) for s in data.SPLITS}
    assert sizes == {"train": 161962, "regression_fit": 19000, "test": 1000}
    assert not set(data.split_names("train")) & set(data.split_names("test"))
    mafl = set(data.split_names("regression_fit")) | set(data.split_names("test"))
    assert len(names) - len(mafl) == CelebAAligned.TRAIN_LISTS["all_minus_mafl"] == 182599


def test_long_list_with_a_bad_line_names_it(tmp_path):
    """Lists of 20,000+ rows take the fast tokenizer; a bad line still fails with its number."""
    rows = [f"{i:06d}.jpg 1 2 3 4" for i in range(1, 25001)]
    path = tmp_path / "list_bbox_celeba.txt"
    path.write_text("25000\nimage_id x_1 y_1 width height\n" + "\n".join(rows) + "\n")
    assert read_table(path, 4).values.shape == (25000, 4)
    rows[20000] = "020001.jpg 1 2 x 4"
    path.write_text("25000\nimage_id x_1 y_1 width height\n" + "\n".join(rows) + "\n")
    with pytest.raises(UserError, match=r"list_bbox_celeba.txt:20003: non-numeric value in '020001.jpg 1 2 x 4'"):
        read_table(path, 4)


# ---------------------------------------------------------------- protocols and a run

def test_protocol_asks_for_k8_and_k4_via_set(root):
    from segbench.benchmark.runner import RunRequest, resolve
    k8 = resolve(RunRequest(method="centre_prior", protocol="celeba_wild", preset="smoke", data_root=str(root)))
    k4 = resolve(RunRequest(method="centre_prior", protocol="celeba_wild", preset="smoke", data_root=str(root),
                            overrides={"num_parts": "4"}, options={"regression": "scops"}))
    k10 = resolve(RunRequest(method="centre_prior", protocol="celeba_aligned", preset="smoke", data_root=str(root)))
    assert (k8.method_config.num_parts, k4.method_config.num_parts, k10.method_config.num_parts) == (8, 4, 10)
    assert k4.protocol.options == {"regression": "scops"}


def test_run_end_to_end_on_fixture(root, tmp_path):
    out = tmp_path / "runs"
    res = run_cli("run", "--method", "centre_prior", "--protocol", "celeba_wild", "--data-root", str(root.parent),
                  "--preset", "smoke", "--limit", "8", "--out", str(out), "--no-progress")
    assert res.returncode == 0, res.stderr
    assert "CountMismatchWarning: celeba_wild split 'test': found 2 images" in res.stderr
    (metrics_file,) = out.glob("celeba_wild/centre_prior/*/metrics.json")
    (record,) = json.loads(metrics_file.read_text())
    assert record["metric"] == "landmark_err_no_intercept_pct" and record["n_eval"] == 2
    assert np.isfinite(record["value"]) and record["value"] > 0
    config = json.loads((metrics_file.parent / "config.json").read_text())
    assert config["dataset"]["split_sizes"]["regression_fit"] == {"found": 3, "expected": 5379}
