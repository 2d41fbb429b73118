"""The evaluate contract (values keyed by the declared metrics; ``Protocol.score`` names, checks
and builds the records) and the per-image score files a run directory gets: format, atomic
write, and per-image means equal to metrics.json on synthetic_parts."""
import gzip
import json
import math
from collections import defaultdict

import numpy as np
import pytest

from segbench.benchmark.runner import RunRequest, resolve, score
from segbench.protocols.per_image import PER_IMAGE_COLUMNS, read_per_image_scores, write_per_image_scores
from segbench.protocols.spec import MetricSpec, PerImage, Protocol, ProtocolSpec
from tests.conftest import SHARED_DATA


class _Split:
    name = "test"

    def __len__(self):
        return 3

    def image_id(self, i):
        return f"img{i}.png"


class Toy(Protocol):
    spec = ProtocolSpec(name="toy", version="1", reproduces="segbench", dataset="synthetic_parts",
                        splits={"fit": "train", "test": "test"}, image_size=8, needs=frozenset({"parts"}),
                        num_parts=1, options={"variant": ("a", "b")},
                        metrics=(MetricSpec("score_{variant}", True, key="score"),
                                 MetricSpec("best", True, key="best")))
    returned: dict = {}

    def evaluate(self, method, splits, *, batch_size=32, progress=True, device="cpu"):
        return self.returned


def _toy(returned, **options):
    protocol = Toy(options)
    protocol.returned = returned
    return protocol.score(None, {"test": _Split()}, progress=False)


def test_score_names_the_metrics_and_builds_records_and_per_image_rows():
    values = np.array([0.5, 1.0, 0.0])
    scores = _toy({"score": PerImage(0.5, ["img0.png", "img1.png", "img2.png"], values), "best": np.float32(2)},
                  variant="b")
    assert scores.records == [{"metric": "score_b", "split": "test", "value": 0.5, "n_eval": 3},
                              {"metric": "best", "split": "test", "value": 2.0, "n_eval": 3}]
    assert all(type(r["value"]) is float for r in scores.records)
    assert scores.per_image == [("test", "img0.png", "score_b", 0.5), ("test", "img1.png", "score_b", 1.0),
                                ("test", "img2.png", "score_b", 0.0)]


@pytest.mark.parametrize("returned,error", [
    ({"score": 1.0}, "returned metrics"),  # a declared metric missing
    ({"score": 1.0, "best": 1.0, "extra": 1.0}, "returned metrics"),  # an undeclared one
    ({"score": float("nan"), "best": 1.0}, "not finite"),
    ({"score": "0.5", "best": 1.0}, "expected a number"),
    ({"score": PerImage(0.6, ["a", "b"], np.array([0.5, 0.5])), "best": 1.0}, "per-image mean"),
    ({"score": PerImage(0.5, ["a", "a"], np.array([0.5, 0.5])), "best": 1.0}, "not unique"),
    ({"score": PerImage(0.5, ["a"], np.array([0.5, 0.5])), "best": 1.0}, "image ids for"),
    ({"score": PerImage(0.5, ["a", "b"], np.array([0.5, np.nan])), "best": 1.0}, "non-finite"),
])
def test_score_refuses_what_breaks_the_contract(returned, error):
    with pytest.raises((ValueError, TypeError), match=error):
        _toy(returned)


def test_per_image_file_format_is_exact_and_written_atomically(tmp_path):
    rows = [("test", "a/b.jpg", "fg_iou_ganseg", 0.1 + 0.2), ("test", "c,d.jpg", "fg_iou_ganseg", 1 / 3)]
    path = write_per_image_scores(tmp_path / "scores_per_image.csv.gz", rows)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scores_per_image.csv.gz"]  # no temporary left
    text = gzip.decompress(path.read_bytes()).decode()
    assert text.splitlines()[0] == ",".join(PER_IMAGE_COLUMNS) == "split,image_id,metric,value"
    assert read_per_image_scores(path) == rows  # exact round trip of the floats
    first = path.read_bytes()
    write_per_image_scores(path, rows)
    assert path.read_bytes() == first  # same scores, same bytes
    pd = pytest.importorskip("pandas")
    frame = pd.read_csv(path, dtype={"image_id": str})
    assert list(frame.columns) == list(PER_IMAGE_COLUMNS) and frame["image_id"].tolist() == ["a/b.jpg", "c,d.jpg"]


def _score_to(run_dir, method, protocol, data_root=None, limit=24, options=None):
    run_dir.mkdir(exist_ok=True)
    request = RunRequest(method=method, protocol=protocol, preset="smoke", limit=limit, progress=False,
                         batch_size=10, device="cpu", data_root=data_root, options=options or {})
    resolved = resolve(request)
    model = resolved.method_cls(resolved.method_config)
    context = dict(method=method, protocol=protocol, protocol_version="1", dataset=resolved.protocol.spec.dataset,
                   seed=0, run_id="t", num_parts=model.num_parts, preset="smoke", git_hash="x", date="d",
                   limit=12, batch_size=32, train_git_hash="x")
    records = score(model, resolved, request, context, run_dir=run_dir)
    by_metric = defaultdict(list)
    for split, image_id, metric, value in read_per_image_scores(run_dir / "scores_per_image.csv.gz"):
        by_metric[metric].append((split, image_id, value))
    return {r["metric"]: r["value"] for r in records}, by_metric


def _means_match(values, by_metric):
    for metric, items in by_metric.items():
        assert math.isclose(np.mean([v for _, _, v in items]), values[metric], rel_tol=1e-12), metric
        assert len({i for _, i, _ in items}) == len(items)


@pytest.mark.parametrize("method", ["centre_prior", "dummy"])
def test_per_image_means_equal_the_metrics_on_synthetic_parts(method, tmp_path):
    values, by_metric = _score_to(tmp_path, method, "synthetic_parts")
    # the landmark error and the per-image IoU are means over images; the Hungarian mIoU is not
    assert set(by_metric) == {"landmark_err_no_intercept_pct", "fg_iou_per_image_mean"}
    _means_match(values, by_metric)
    for items in by_metric.values():
        assert [(s, i) for s, i, _ in items] == [("test", str(i)) for i in range(len(items))]  # ids: the index
    assert len(by_metric["fg_iou_per_image_mean"]) == 24


@pytest.mark.skipif(not (SHARED_DATA / "faces_wild68").exists() or not (SHARED_DATA / "pascal_s").exists(),
                    reason="real data not found (../shared/data)")
def test_per_image_means_equal_the_metrics_on_real_images_keyed_by_file(tmp_path):
    values, by_metric = _score_to(tmp_path / "faces", "dummy", "faces_wild", str(SHARED_DATA), limit=20,
                                  options={"regression": "scops"})
    assert set(by_metric) == {"landmark_err_scops_pct"}
    _means_match(values, by_metric)
    assert all(i.startswith("images/train/") and i.endswith(".jpg") for _, i, _ in by_metric["landmark_err_scops_pct"])
    values, by_metric = _score_to(tmp_path / "pascal", "dummy", "pascal_s", str(SHARED_DATA), limit=6,
                                  options={"iou": "melas"})
    assert set(by_metric) == {"saliency_accuracy", "saliency_iou", "saliency_fbeta_at_0.5", "fg_iou_melas"}
    _means_match(values, by_metric)


def test_every_protocol_declares_distinct_metric_keys():
    from segbench.protocols import PROTOCOLS
    for name in PROTOCOLS.names():
        keys = [m.key for m in PROTOCOLS.get(name).spec.metrics]
        assert len(keys) == len(set(keys)), name


def test_rescore_writes_the_rescored_per_image_file(tmp_path):
    from segbench.benchmark.runner import rescore, run
    run_dir = run(RunRequest(method="centre_prior", protocol="synthetic_parts", preset="smoke", limit=12,
                             progress=False, out=str(tmp_path), device="cpu"))
    records = rescore(run_dir, progress=False)
    rows = read_per_image_scores(run_dir / "scores_per_image_rescored.csv.gz")
    rescored = json.loads((run_dir / "metrics_rescored.json").read_text())
    assert rescored == records
    for record in rescored:
        values = [v for _, _, m, v in rows if m == record["metric"]]
        if record["metric"] != "part_miou_hungarian":
            assert len(values) == 12 and math.isclose(np.mean(values), record["value"], rel_tol=1e-12)
