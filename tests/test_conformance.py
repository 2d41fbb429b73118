"""One conformance suite over every registered method and protocol (the benchopt habit).

The method half is the shipped suite, ``segbench.benchmark.check_plugin`` (what
``python -m benchmark check-plugin NAME`` runs), over every registered method: config and
presets, fit at preset smoke, valid predictions, scoring through ``synthetic_parts``, batch
invariance, seed determinism, save/load, no labels reachable from the fit images, samples. A new
plugin must pass this file unchanged.
"""
import numpy as np
import pytest
import torch

from segbench.benchmark.check_plugin import CHECKS, FAIL, PluginHarness, find_label_path, run_check
from segbench.benchmark.errors import DataNotFoundError
from segbench.benchmark.runner import RunRequest, resolve, score
from segbench.datasets import DATASETS
from segbench.datasets.base import FitImages
from segbench.methods import METHODS
from segbench.methods.base import PARTS, SAMPLES, PredictionError
from segbench.methods.common.runtime import torch_threads
from segbench.methods.context import FitContext
from segbench.protocols import PROTOCOLS
from segbench.protocols.spec import Protocol

IMAGE_SIZE = 32


@pytest.fixture(scope="module", params=METHODS.names())
def harness(request, tmp_path_factory):
    """One method under the shipped suite; its fits (seed 0 twice, seed 1 once) are made once per
    test run and shared by every check (``PluginHarness`` caches them)."""
    name = request.param
    return PluginHarness(METHODS.get(name), name, tmp_path_factory.mktemp(f"check_{name}"))


@pytest.mark.parametrize("check", CHECKS)
def test_method_passes_check(harness, check):
    with torch_threads(1):  # tiny networks: one thread beats two contended ones
        result = run_check(harness, check)
    assert result.status != FAIL, f"{harness.name}: {result.line()}"


def test_fit_images_carry_images_only():
    data = DATASETS.get("synthetic_parts")(image_size=IMAGE_SIZE, n_train=16, n_regression_fit=8, n_test=8)
    fit_images = data.split("train").fit_images()
    assert isinstance(fit_images, FitImages)
    item = fit_images[0]
    assert isinstance(item, torch.Tensor) and item.dtype == torch.float32 and item.shape == (3, IMAGE_SIZE, IMAGE_SIZE)
    found, visited = find_label_path(fit_images)
    assert found is None and visited >= 1, found


def test_predictions_contract_rejects_bad_outputs():
    from segbench.methods.base import Predictions
    images = torch.rand(2, 3, 8, 8)
    bad = [torch.rand(2, 3, 8, 8), torch.full((2, 3, 4, 4), 1 / 3), torch.full((2, 1, 8, 8), 1.0)]
    for probs in bad:
        with pytest.raises(PredictionError):
            Predictions(probs).validate(images)


@pytest.mark.parametrize("name", PROTOCOLS.names())
def test_protocol_spec_is_complete(name):
    cls = PROTOCOLS.get(name)
    assert issubclass(cls, Protocol)
    spec = cls.spec
    assert spec.name == name and spec.version and spec.reproduces
    assert spec.dataset in DATASETS
    assert "fit" in spec.splits and spec.scored_role in spec.splits
    spec.resolve_options(spec.smoke_options)
    assert spec.needs and spec.needs <= {PARTS, SAMPLES}
    option_sets = [{}] + [{k: v} for k, values in spec.options.items() for v in values]
    for given in option_sets:
        options = spec.resolve_options(given)
        names = [m.name for m in spec.metric_specs(options)]
        assert len(names) == len(set(names)), "metric names must be unique"
        for value in given.values():  # the variant must be visible in some metric name
            assert any(value in n for n in names), f"variant {value} not encoded in {names}"


def _pooled_colour_features(images, device="cpu", **_):
    """uint8 [B,3,H,W] -> float64 [B,12]: colour means over a 2x2 grid (a stand-in feature net)."""
    x = torch.nn.functional.adaptive_avg_pool2d(images.float() / 255, 2)
    return x.flatten(1).double().numpy()


@pytest.mark.parametrize("name", PROTOCOLS.names())
@pytest.mark.parametrize("method", ["centre_prior", "dummy"])
def test_protocol_scores_every_declared_metric(name, method, tmp_path, monkeypatch):
    spec = PROTOCOLS.get(name).spec
    if not spec.needs <= METHODS.get(method).produces:
        pytest.skip(f"{method} does not produce {sorted(spec.needs)}")
    if "samples" in spec.needs:
        # The protocol's plumbing, not Inception's features (tests/metrics/test_fid.py checks those):
        # a cheap stand-in feature network, and statistics cached in tmp, never in the user's cache.
        from segbench import feature_nets
        monkeypatch.setattr(feature_nets, "inception_features", _pooled_colour_features)
        monkeypatch.setenv("SEGBENCH_CACHE", str(tmp_path / "cache"))
    request = RunRequest(method=method, protocol=name, preset="smoke", limit=12, progress=False,
                         options=spec.smoke_options)
    try:
        resolved = resolve(request)
    except DataNotFoundError as exc:
        pytest.skip(f"data for {name} not available: {exc}")
    spec = resolved.protocol.spec
    model = resolved.method_cls(resolved.method_config)
    model.fit(resolved.dataset.split(spec.splits["fit"], limit=12).fit_images(), FitContext(seed=0, run_dir=tmp_path, progress=False))
    context = dict(method=method, protocol=name, protocol_version=spec.version, dataset=spec.dataset,
                   seed=0, run_id="t", num_parts=model.num_parts, preset="smoke", git_hash="x", date="d",
                   limit=12, batch_size=32, train_git_hash="x")
    records = score(model, resolved, request, context)
    declared = {m.name for m in spec.metric_specs(resolved.protocol.options)}
    assert {r["metric"] for r in records} == declared
    for r in records:
        assert np.isfinite(r["value"]) and r["n_eval"] > 0
