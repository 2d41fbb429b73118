"""``tables --ci``: the paired bootstrap (hand-computed cases, identical methods, a constant shift),
the pairing over seeds and images, and a CLI run over fabricated run folders (nothing trained)."""
import json

import numpy as np
import pandas as pd
import pytest

from segbench.benchmark.paired_bootstrap import paired_bootstrap
from segbench.benchmark.records import RECORD_FIELDS, SCHEMA_VERSION
from segbench.benchmark.tables import PER_IMAGE_FILE, paired_ci, write_ci_tables
from tests.conftest import run_cli_here as run_cli

# ---------------------------------------------------------------- the pure function


def test_hand_computed_two_pairs():
    # differences [0, 1]: resampled means are 0, 1/2, 1 with probabilities 1/4, 1/2, 1/4,
    # so both 2.5% tails sit inside the point masses at 0 and 1.
    ci = paired_bootstrap([1.0, 3.0], [1.0, 2.0])
    assert (ci.mean, ci.low, ci.high, ci.n, ci.resamples) == (0.5, 0.0, 1.0, 2, 10_000)
    assert not ci.excludes_zero


def test_hand_computed_three_pairs():
    # differences [2, 3, 0], mean 5/3; P(mean = 0) = P(mean = 3) = 1/27 = 3.7% > 2.5%
    ci = paired_bootstrap([3.0, 5.0, 4.0], [1.0, 2.0, 4.0])
    assert ci.mean == pytest.approx(5 / 3) and (ci.low, ci.high) == (0.0, 3.0)


def test_matches_an_explicit_resampling_loop():
    rng = np.random.default_rng(5)
    a, b = rng.random(37), rng.random(37)
    ci = paired_bootstrap(a, b, resamples=500, seed=3)
    draws = np.random.default_rng(3).integers(0, 37, size=(500, 37))
    means = np.array([(a - b)[idx].mean() for idx in draws])
    assert ci.mean == pytest.approx((a - b).mean())
    assert (ci.low, ci.high) == pytest.approx(tuple(np.percentile(means, [2.5, 97.5])))


def test_identical_methods_give_zero_width_interval_at_zero():
    x = np.random.default_rng(0).random(50)
    ci = paired_bootstrap(x, x.copy())
    assert (ci.mean, ci.low, ci.high) == (0.0, 0.0, 0.0) and not ci.excludes_zero


@pytest.mark.parametrize("c", [0.25, -3.0, 0.0625])
def test_constant_shift_gives_exactly_c(c):
    b = np.random.default_rng(1).integers(0, 1024, 40) / 1024  # b + c - b == c exactly
    ci = paired_bootstrap(b + c, b)
    assert (ci.mean, ci.low, ci.high) == (c, c, c) and ci.excludes_zero


def test_constant_shift_up_to_rounding():
    b = np.random.default_rng(1).random(40)
    ci = paired_bootstrap(b + 0.1, b)  # b + 0.1 - b is 0.1 give or take an ulp per image
    assert ci.low <= ci.mean <= ci.high and ci.high - ci.low < 1e-15
    assert ci.mean == pytest.approx(0.1, abs=1e-15)


def test_deterministic_and_validated():
    a, b = np.arange(10.0), np.arange(10.0)[::-1]
    assert paired_bootstrap(a, b) == paired_bootstrap(a, b)
    with pytest.raises(ValueError):
        paired_bootstrap([1.0], [1.0, 2.0])
    with pytest.raises(ValueError):
        paired_bootstrap([], [])
    with pytest.raises(ValueError):
        paired_bootstrap([np.nan], [1.0])


# ---------------------------------------------------------------- fabricated runs


def _run(root, method, seed, metrics, per_image=None, protocol="p", preset="quick", limit=None):
    """A run folder with metrics.json (one record per metric: name -> (mean value, higher_is_better)) and,
    when given, scores_per_image.csv.gz from {metric: {image_id: value}}."""
    d = root / protocol / method / f"20240101-000000-00000{seed}{'' if limit is None else f'-l{limit}'}-s{seed}"
    d.mkdir(parents=True)
    records = []
    for metric, (value, hib) in metrics.items():
        row = dict.fromkeys(RECORD_FIELDS, "x")
        row.update(method=method, protocol=protocol, protocol_version="1", split="test", metric=metric,
                   value=value, higher_is_better=hib, seed=seed, run_id=d.name, n_eval=8, num_parts=4,
                   preset=preset, limit=limit, batch_size=32, schema_version=SCHEMA_VERSION)
        records.append(row)
    (d / "metrics.json").write_text(json.dumps(records))
    if per_image is not None:
        rows = [{"split": "test", "image_id": i, "metric": m, "value": v}
                for m, values in per_image.items() for i, v in values.items()]
        pd.DataFrame(rows, columns=["split", "image_id", "metric", "value"]).to_csv(d / PER_IMAGE_FILE, index=False)
    return d


IMAGES = [f"img{i:02d}" for i in range(8)]
BETA_IOU = dict(zip(IMAGES, [0.5, 0.625, 0.375, 0.75, 0.25, 0.5, 0.875, 0.125]))
ALPHA_IOU = {k: v + 0.25 for k, v in BETA_IOU.items()}
ALPHA_ERR = dict(zip(IMAGES, [3.0, 4.0, 2.5, 5.0, 3.5, 4.5, 2.0, 3.0]))
BETA_ERR = dict(zip(IMAGES, [3.5, 3.0, 3.0, 4.0, 4.5, 4.0, 3.0, 2.5]))


def _fabricate(root):
    _run(root, "alpha", 0, {"fg_iou": (0.8125, True), "err": (3.4375, False)},
         {"fg_iou": ALPHA_IOU, "err": ALPHA_ERR})
    _run(root, "beta", 0, {"fg_iou": (0.5, True), "err": (3.4375, False)}, {"fg_iou": BETA_IOU, "err": BETA_ERR})
    return _run(root, "gamma", 0, {"fg_iou": (0.1, True)})  # no per-image scores


def test_cli_prints_the_interval(tmp_path):
    runs = tmp_path / "runs"
    gamma = _fabricate(runs)
    out = tmp_path / "tables"
    (tmp_path / "nopaper").mkdir()
    res = run_cli("tables", "--runs", str(runs), "--paper", str(tmp_path / "nopaper"), "--out", str(out),
                  "--ci", "--ci-resamples", "2000")
    assert res.returncode == 0, res.stderr
    print(res.stdout)
    lines = res.stdout.splitlines()
    notes = [l for l in lines if l.startswith("note:")]
    assert notes == [f"note: 1 run(s) without {PER_IMAGE_FILE} skipped: {gamma.relative_to(runs).as_posix()}"]
    assert f"wrote {out / 'ci.md'}" in lines and f"wrote {out / 'ci.csv'}" in lines
    iou = next(l for l in lines if "| fg_iou |" in l)
    cells = [c.strip() for c in iou.strip("|").split("|")]
    assert cells == ["p", "1", "test", "fg_iou", "True", "alpha [quick] K=4", "beta [quick] K=4", "0", "8",
                     "0.7500", "0.5000", "0.2500", "0.2500", "0.2500", "True", "alpha [quick] K=4"]
    err = [c.strip() for c in next(l for l in lines if "| err |" in l).strip("|").split("|")]
    ci = paired_bootstrap(list(ALPHA_ERR.values()), list(BETA_ERR.values()), resamples=2000)
    assert err[11:14] == [f"{ci.mean:.4f}", f"{ci.low:.4f}", f"{ci.high:.4f}"]
    assert err[14] == str(ci.excludes_zero)
    assert (out / "ci.md").read_text() in res.stdout
    table = pd.read_csv(out / "ci.csv")
    assert len(table) == 2 and set(table["metric"]) == {"fg_iou", "err"}
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_pairs_on_shared_seeds_and_images_and_direction(tmp_path):
    rng = np.random.default_rng(2)
    values = {(m, s): dict(zip(IMAGES, rng.random(8).round(3))) for m in ("a", "b") for s in (0, 1, 2)}
    del values[("b", 1)]["img03"]  # img03 lacks a score under one shared seed of b: left out
    for (m, s), v in values.items():
        if (m, s) != ("b", 2):  # b has seeds {0, 1}: the shared seeds are {0, 1}
            _run(tmp_path, m, s, {"err": (0.0, False)}, {"err": v})
    frame, notes = paired_ci(tmp_path, resamples=300)
    assert notes == [] and len(frame) == 1
    row = frame.iloc[0]
    ids = [i for i in IMAGES if i != "img03"]
    a = np.array([(values[("a", 0)][i] + values[("a", 1)][i]) / 2 for i in ids])
    b = np.array([(values[("b", 0)][i] + values[("b", 1)][i]) / 2 for i in ids])
    ci = paired_bootstrap(a, b, resamples=300)
    assert (row["seeds"], row["n_images"]) == ("0,1", 7)
    assert row["diff"] == pytest.approx(ci.mean) and (row["ci_low"], row["ci_high"]) == pytest.approx((ci.low, ci.high))
    assert str(row["higher_is_better"]) == "False"
    # lower is better: a clearly lower error makes a the better one
    shifted = tmp_path / "shifted"
    for s in (0, 1):
        _run(shifted, "a", s, {"err": (0.0, False)}, {"err": {i: 1.0 for i in IMAGES}})
        _run(shifted, "b", s, {"err": (0.0, False)}, {"err": {i: 2.0 + 0.5 * s for i in IMAGES}})
    frame, _ = paired_ci(shifted)
    assert frame.iloc[0]["diff"] == -1.25 and frame.iloc[0]["better"] == "a [quick] K=4"


def test_ci_files_are_byte_identical_on_rerun(tmp_path):
    _fabricate(tmp_path / "runs")
    first, _, _ = write_ci_tables(tmp_path / "runs", tmp_path / "t1", resamples=500)
    write_ci_tables(tmp_path / "runs", tmp_path / "t2", resamples=500)
    for f in first:
        assert f.read_bytes() == (tmp_path / "t2" / f.name).read_bytes()


def test_bad_per_image_columns_is_a_user_error(tmp_path):
    d = _run(tmp_path, "a", 0, {"err": (0.0, False)})
    pd.DataFrame({"image_id": ["x"], "value": [1.0]}).to_csv(d / PER_IMAGE_FILE, index=False)
    res = run_cli("tables", "--runs", str(tmp_path), "--out", str(tmp_path / "t"), "--ci")
    assert res.returncode == 2 and "expected ['split', 'image_id', 'metric', 'value']" in res.stderr


def test_pairs_only_runs_of_the_same_limit(tmp_path):
    """A --limit run is its own arm: compared with limited runs of the same limit, never with full runs."""
    _run(tmp_path, "a", 0, {"err": (0.0, False)}, {"err": ALPHA_ERR})
    _run(tmp_path, "b", 0, {"err": (0.0, False)}, {"err": BETA_ERR})
    _run(tmp_path, "a", 0, {"err": (0.0, False)}, {"err": dict(list(BETA_ERR.items())[:4])}, limit=4)
    frame, notes = paired_ci(tmp_path, resamples=200)
    assert notes == [] and len(frame) == 1  # the limited run of a has no limited partner
    assert (frame.iloc[0]["method_a"], frame.iloc[0]["method_b"]) == ("a [quick] K=4", "b [quick] K=4")
    _run(tmp_path, "b", 0, {"err": (0.0, False)}, {"err": dict(list(ALPHA_ERR.items())[:4])}, limit=4)
    frame, _ = paired_ci(tmp_path, resamples=200)
    limited = frame[frame["method_a"].str.endswith("limit=4")]
    assert list(limited["method_b"]) == ["b [quick] K=4 limit=4"] and list(limited["n_images"]) == [4]
    full = frame[~frame["method_a"].str.endswith("limit=4")]
    assert list(full["n_images"]) == [8]


def test_unreadable_per_image_file_is_a_user_error_naming_it(tmp_path):
    d = _run(tmp_path, "a", 0, {"err": (0.0, False)})
    (d / PER_IMAGE_FILE).write_bytes(b"\x1f\x8b\x08\x00garbage")
    res = run_cli("tables", "--runs", str(tmp_path), "--out", str(tmp_path / "t"), "--ci")
    assert res.returncode == 2 and str(d / PER_IMAGE_FILE) in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
