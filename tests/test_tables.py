"""Aggregation over seeds against numpy, the pivot, the paper join and determinism."""
import json

import numpy as np
import pandas as pd

from segbench.benchmark.records import RECORD_FIELDS, SCHEMA_VERSION
from segbench.benchmark.tables import PAPER_COLUMNS, aggregate, load_runs, paper_vs_ours, pivot_ours, write_tables


def _record(method, seed, metric, value, hib=True, protocol="p", num_parts=4):
    row = dict.fromkeys(RECORD_FIELDS, "x")
    row.update(method=method, seed=seed, metric=metric, value=value, higher_is_better=hib,
               protocol=protocol, protocol_version="1", split="test", preset="paper", num_parts=num_parts,
               n_eval=10, run_id=f"r{seed}", limit=None, batch_size=32, schema_version=SCHEMA_VERSION)
    return row


def _write_runs(root, rows):
    for i, row in enumerate(rows):
        d = root / row["protocol"] / row["method"] / f"run{i}"
        d.mkdir(parents=True)
        (d / "metrics.json").write_text(json.dumps([row]))


def test_mean_std_count_match_numpy(tmp_path):
    values = [0.5, 0.7, 0.9]
    _write_runs(tmp_path, [_record("a", s, "iou", v) for s, v in enumerate(values)])
    agg = aggregate(load_runs(tmp_path))
    assert len(agg) == 1
    assert np.isclose(agg["mean"][0], np.mean(values))
    assert np.isclose(agg["std"][0], np.std(values, ddof=1))
    assert agg["n_runs"][0] == 3 and agg["n_seeds"][0] == 3 and agg["seeds"][0] == "0,1,2"
    assert not agg["duplicate_seed"][0]


def test_pivot_marks_direction_and_paper_delta(tmp_path):
    _write_runs(tmp_path, [_record("a", 0, "err", 10.0, hib=False), _record("a", 1, "err", 12.0, hib=False)])
    agg = aggregate(load_runs(tmp_path))
    table = pivot_ours(agg)
    assert list(table.columns) == ["p / err ↓"]
    assert table.iloc[0, 0] == "11.0000 ± 1.4142 (n=2)"
    paper = pd.DataFrame([dict(zip(PAPER_COLUMNS, ["P", "Tab.1", "P Tab.1", "Ours", "a", "p", "err", 4, 9.5, ""])),
                          dict(zip(PAPER_COLUMNS, ["P", "Tab.1", "P Tab.1", "Other", "", "p", "err", 4, 20.0, ""]))])
    paper["num_parts"] = paper["num_parts"].astype("Int64")
    joined = paper_vs_ours(agg, paper)
    ours_row = joined[joined["display_method"] == "Ours"].iloc[0]
    assert np.isclose(ours_row["delta"], 11.0 - 9.5)
    other = joined[joined["display_method"] == "Other"].iloc[0]
    assert pd.isna(other["ours_mean"])


def test_tables_are_byte_identical_on_rerun(tmp_path):
    _write_runs(tmp_path / "runs", [_record("a", s, "iou", 0.1 * s) for s in range(3)]
                + [_record("b", 0, "err", 3.0, hib=False)])
    out1, out2 = tmp_path / "t1", tmp_path / "t2"
    files1 = write_tables(tmp_path / "runs", tmp_path / "nopaper", out1)
    write_tables(tmp_path / "runs", tmp_path / "nopaper", out2)
    assert files1
    for f in files1:
        assert f.read_bytes() == (out2 / f.name).read_bytes()


def _grouped(rows):
    return aggregate(pd.DataFrame(rows))


def test_groups_that_share_a_row_and_column_stay_apart():
    """Another protocol version is another column; another n_eval stays apart inside one cell."""
    v2 = dict(_record("a", 0, "iou", 0.5), protocol_version="2")
    small = dict(_record("a", 1, "iou", 0.9), n_eval=20)
    agg = _grouped([_record("a", 0, "iou", 0.1), _record("a", 1, "iou", 0.3), v2, small])
    assert len(agg) == 3 and list(agg["n_runs"]) == [2, 1, 1]
    table = pivot_ours(agg)
    assert list(table.columns) == ["p v1 / iou ↑", "p v2 / iou ↑"]
    assert table.loc["a [paper] K=4", "p v1 / iou ↑"] == \
        "0.2000 ± 0.1414 (n=2) [test, n_eval=10]; 0.9000 (n=1) [test, n_eval=20]"
    assert table.loc["a [paper] K=4", "p v2 / iou ↑"] == "0.5000 (n=1)"


def test_limited_runs_are_their_own_row_and_not_joined_with_papers():
    limited = dict(_record("a", 0, "err", 50.0, hib=False), limit=4, n_eval=4)
    agg = _grouped([_record("a", 0, "err", 10.0, hib=False), limited])
    table = pivot_ours(agg)
    assert list(table.index) == ["a [paper] K=4", "a [paper] K=4 limit=4"]
    assert table.loc["a [paper] K=4 limit=4", "p / err ↓"] == "50.0000 (n=1)"
    paper = pd.DataFrame([dict(zip(PAPER_COLUMNS, ["P", "Tab.1", "P Tab.1", "Ours", "a", "p", "err", 4, 9.5, ""]))])
    paper["num_parts"] = paper["num_parts"].astype("Int64")
    joined = paper_vs_ours(agg, paper)
    assert list(joined["ours_mean"]) == [10.0] and list(joined["ours_detail"]) == ["v1, n_eval 10, n=1"]


def test_runs_are_counted_not_unique_seeds():
    agg = _grouped([_record("a", 0, "iou", 0.5), _record("a", 0, "iou", 0.7)])
    row = agg.iloc[0]
    assert (row["n_runs"], row["n_seeds"], row["seeds"], bool(row["duplicate_seed"])) == (2, 1, "0,0", True)
    assert pivot_ours(agg).iloc[0, 0] == "0.6000 ± 0.1414 (n=2, seeds 0,0, duplicate seed)"
