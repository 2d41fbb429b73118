"""The papers' numbers as data (results/paper/*.csv): spot checks against values typed here from
the paper texts, registry names, unique keys, numeric values, and the paper/ours join rule."""
import itertools
import math

import pandas as pd
import pytest

from segbench.benchmark.tables import PAPER_COLUMNS, aggregate, load_paper, paper_vs_ours
from tests.conftest import REPO

PAPER_DIR = REPO / "results" / "paper"
KEY = ["paper", "table", "method_as_printed", "protocol", "metric", "num_parts", "setting"]
# Methods we have or plan (registry names); other papers' methods leave `method` empty.
OUR_METHODS = {"ganseg", "latent_direction", "liu_parts", "centre_prior"}


@pytest.fixture(scope="module")
def raw():
    """Every CSV as text, so values are checked as printed (no float coercion by the loader)."""
    frames = [pd.read_csv(p, dtype=str, keep_default_na=False).assign(file=p.name)
              for p in sorted(PAPER_DIR.glob("*.csv"))]
    return pd.concat(frames, ignore_index=True)


def _registered_protocol_metrics() -> set[tuple[str, str]]:
    """(protocol, metric) for every registered protocol and every combination of its options."""
    from segbench.protocols import PROTOCOLS

    pairs = set()
    for name in PROTOCOLS.names():
        spec = PROTOCOLS.get(name).spec
        option_names = list(spec.options)
        for values in itertools.product(*(spec.options[o] for o in option_names)):
            for metric in spec.metric_specs(dict(zip(option_names, values))):
                pairs.add((name, metric.name))
    return pairs


def _cell(raw, citation, printed, protocol, metric, num_parts="", setting=None):
    rows = raw[(raw["citation"] == citation) & (raw["method_as_printed"] == printed)
               & (raw["protocol"] == protocol) & (raw["metric"] == metric) & (raw["num_parts"] == num_parts)]
    if setting is not None:
        rows = rows[rows["setting"].str.startswith(setting)]
    assert len(rows) == 1, (citation, printed, protocol, metric, num_parts, len(rows))
    return rows["value"].iloc[0]


# (citation, method as printed, protocol, metric, K, value as printed in the paper)
SPOT_CHECKS = [
    ("GANSeg Tab.1", "Ours", "celeba_wild", "landmark_err_no_intercept_pct", "8", "6.18"),
    ("GANSeg Tab.1", "Ours", "celeba_aligned", "landmark_err_no_intercept_pct", "10", "3.98"),
    ("GANSeg Tab.1", "IMM [20]", "celeba_wild", "landmark_err_no_intercept_pct", "4", "19.42"),
    ("GANSeg Tab.2", "Ours", "cub_fg", "fg_iou_ganseg", "8", "0.629"),
    ("GANSeg Tab.2", "ReDO [4]", "flowers_fg", "fg_iou_ganseg", "", "0.764"),
    ("GANSeg Tab.3", "Ours", "taichi", "taichi_mae_sum36", "10", "417.17"),
    ("GANSeg Tab.3", "Ours", "taichi", "fg_iou_ganseg", "10", "0.8538"),
    ("GANSeg supp. §C", "models used in the main paper", "fid_cub", "fid50k", "8", "38.74"),
    ("GANSeg supp. Tab.4", "K=32", "taichi", "taichi_mae_sum36", "32", "1605.84"),
    ("GANSeg supp. Tab.3", "n_per=8", "celeba_wild", "landmark_err_no_intercept_pct", "8", "13.02"),
    ("Melas-Kyriazi Tab.1", "Ours (BigBiGAN - ImageNet)", "ecssd_saliency", "saliency_iou", "1", "0.713"),
    ("Melas-Kyriazi Tab.1", "Ours (BigBiGAN - ImageNet)", "cub_fg", "fg_iou_melas", "1", "0.664"),
    ("Melas-Kyriazi Tab.1", "SPS**† (Nguyen et al., 2019)", "dut_omron_saliency", "saliency_max_fbeta", "",
     "0.736"),
    ("Melas-Kyriazi Tab.2", "SAGAN (Zhang et al., 2019) IN 128px", "duts_saliency", "saliency_iou", "1", "0.282"),
    ("Melas-Kyriazi Tab.7", "λ = 2.5", "flowers_fg", "saliency_accuracy", "1", "0.728"),
    ("Melas-Kyriazi Tab.14", "100", "ecssd_saliency", "saliency_iou", "1", "0.271"),
    ("Liu Tab.1", "Ours", "celeba_wild", "landmark_err_liu_pct", "4", "15.39"),
    ("Liu Tab.2", "Ours", "aflw_unaligned", "landmark_err_liu_pct", "8", "13.13"),
    ("Liu Tab.3", "w/o Lcls", "celeba_wild", "landmark_err_liu_pct", "8", "14.38"),
    ("Liu Tab.5", "Ours", "pascal_voc_bus", "fg_iou_part_union_pct", "4", "78.17"),
    ("Liu App.Tab.1", "CelebA", "celeba_wild", "hparam_lambda_fg", "8", "0.5"),
]


@pytest.mark.parametrize("citation,printed,protocol,metric,num_parts,value", SPOT_CHECKS)
def test_spot_checks_against_the_papers(raw, citation, printed, protocol, metric, num_parts, value):
    assert _cell(raw, citation, printed, protocol, metric, num_parts) == value


def test_every_file_has_the_columns_and_numeric_values(raw):
    for column in PAPER_COLUMNS + ("setting", "implemented"):
        assert column in raw.columns, column
    values = raw["value"].map(float)
    assert values.map(math.isfinite).all()
    assert set(raw["implemented"]) <= {"true", "false"}
    k = raw.loc[raw["num_parts"] != "", "num_parts"]
    assert k.map(lambda s: s.isdigit() and int(s) >= 1).all()


def test_keys_are_unique(raw):
    dup = raw[raw.duplicated(KEY, keep=False)]
    assert dup.empty, dup[KEY].to_string()


def test_methods_are_ours_or_empty(raw):
    assert set(raw["method"]) - {""} <= OUR_METHODS
    assert (raw.loc[raw["method_as_printed"] == "Ours", "method"] != "").all()


def test_implemented_rows_exist_in_the_registries(raw):
    """A row marked implemented names a registered protocol and one of its metric names (over every
    combination of the protocol's options); other rows must say implemented=false."""
    registered = _registered_protocol_metrics()
    claimed = raw[raw["implemented"] == "true"]
    missing = claimed[[(p, m) not in registered for p, m in zip(claimed["protocol"], claimed["metric"])]]
    assert missing.empty, "implemented=true but not registered:\n" + missing[["file", "protocol", "metric"]] \
        .drop_duplicates().to_string()


def test_joined_rows_have_one_paper_number_per_key():
    """Rows of a main setting are joined with our runs on (method, protocol, metric, K); two such rows
    for one of our methods would pair the same runs with two numbers."""
    paper = load_paper(PAPER_DIR)
    theirs = paper[(paper["method"] != "") & paper["method"].notna()]
    main = theirs[~theirs["setting"].str.startswith(("ablation", "copied", "hyperparameter"))]
    dup = main[main.duplicated(["method", "protocol", "metric", "num_parts"], keep=False)]
    assert dup.empty, dup[["citation", "method", "protocol", "metric", "num_parts", "setting"]].to_string()


def test_paper_vs_ours_joins_main_rows_only():
    records = pd.DataFrame([dict(protocol="celeba_wild", protocol_version="1", metric="landmark_err_no_intercept_pct",
                                 split="test", higher_is_better=False, method="ganseg", preset="paper",
                                 num_parts=8, value=v, seed=s, n_eval=283) for s, v in enumerate([6.0, 7.0])])
    joined = paper_vs_ours(aggregate(records), load_paper(PAPER_DIR))
    rows = joined[(joined["protocol"] == "celeba_wild") & (joined["method"] == "ganseg")
                  & (joined["metric"] == "landmark_err_no_intercept_pct") & (joined["num_parts"] == 8)]
    with_ours = rows[rows["ours_mean"].notna()]
    assert list(with_ours["citation"]) == ["GANSeg Tab.1"]  # the main number only
    assert with_ours["delta"].iloc[0] == pytest.approx(6.5 - 6.18)
    ablations = rows[rows["setting"].str.startswith("ablation")]
    assert len(ablations) >= 3 and ablations["ours_mean"].isna().all()  # listed, not joined
    assert not joined["citation"].eq("GANSeg supp. Tab.1").any()  # hyperparameters are not listed
