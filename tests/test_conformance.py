"""One conformance suite over every registered method and protocol (the benchopt habit).

A new plugin must pass this file unchanged.
"""
import dataclasses

import numpy as np
import pytest
import torch

from segbench.methods.context import FitContext

from segbench.benchmark.errors import DataNotFoundError
from segbench.benchmark.runner import RunRequest, resolve, score
from segbench.datasets import DATASETS
from segbench.datasets.base import FitImages
from segbench.methods import METHODS
from segbench.methods.base import PARTS, SAMPLES, Method, PredictionError
from segbench.protocols import PROTOCOLS
from segbench.protocols.spec import Protocol

IMAGE_SIZE = 32


@pytest.fixture(scope="module")
def tiny_data():
    data = DATASETS.get("synthetic_parts")(image_size=IMAGE_SIZE, n_train=16, n_regression_fit=8, n_test=8)
    split = data.split("train")
    images = torch.stack([split.fit_images()[i] for i in range(4)])
    return split.fit_images(), images


def _fitted(name, tiny_data, tmp_path, num_parts=3):
    cls = METHODS.get(name)
    overrides = {} if cls.fixed_num_parts is not None else {"num_parts": num_parts}
    method = cls(cls.config_for("smoke", overrides))
    method.fit(tiny_data[0], FitContext(seed=0, run_dir=tmp_path / "work", progress=False))
    return method


@pytest.mark.parametrize("name", METHODS.names())
def test_method_declares_config_presets_and_outputs(name):
    cls = METHODS.get(name)
    assert issubclass(cls, Method)
    assert dataclasses.is_dataclass(cls.Config) and cls.Config.__dataclass_params__.frozen
    assert "num_parts" in {f.name for f in dataclasses.fields(cls.Config)}
    assert cls.config_for("paper") == cls.Config(), "defaults must be the paper's values"
    for preset in ("quick", "smoke"):
        assert isinstance(cls.config_for(preset), cls.Config)
    assert cls.produces and cls.produces <= {PARTS, SAMPLES}


@pytest.mark.parametrize("name", METHODS.names())
def test_method_predicts_valid_probabilities(name, tiny_data, tmp_path):
    method = _fitted(name, tiny_data, tmp_path)
    if PARTS not in method.produces:
        pytest.skip(f"{name} produces no parts")
    images = tiny_data[1]
    probs = method.predict(images).part_probs
    assert probs.shape == (4, method.num_parts + 1, IMAGE_SIZE, IMAGE_SIZE)
    assert torch.allclose(probs.sum(1), torch.ones(4, IMAGE_SIZE, IMAGE_SIZE), atol=1e-4)
    assert probs.min() >= 0 and probs.max() <= 1
    with pytest.raises(ValueError):
        method.predict((images * 255).to(torch.uint8))
    with pytest.raises(ValueError):
        method.predict(images[:, :2])


@pytest.mark.parametrize("name", METHODS.names())
def test_method_save_load_round_trip(name, tiny_data, tmp_path):
    method = _fitted(name, tiny_data, tmp_path)
    method.save(tmp_path / "ckpt")
    loaded = type(method).load(tmp_path / "ckpt")
    assert loaded.config == method.config
    if PARTS in method.produces:
        images = tiny_data[1]
        assert torch.equal(method.predict(images).part_probs, loaded.predict(images).part_probs)
    if SAMPLES in method.produces:
        assert torch.equal(method.sample(2, seed=3), loaded.sample(2, seed=3))


@pytest.mark.parametrize("name", METHODS.names())
def test_method_samples_when_generative(name, tiny_data, tmp_path):
    method = _fitted(name, tiny_data, tmp_path)
    if SAMPLES not in method.produces:
        with pytest.raises(NotImplementedError):
            method.sample(2, seed=0)
        return
    a, b = method.sample(3, seed=1), method.sample(3, seed=1)
    assert a.dtype == torch.uint8 and a.shape[:2] == (3, 3) and torch.equal(a, b)


def test_fit_images_carry_images_only(tiny_data):
    fit_images = tiny_data[0]
    assert isinstance(fit_images, FitImages)
    item = fit_images[0]
    assert isinstance(item, torch.Tensor) and item.dtype == torch.float32 and item.shape == (3, IMAGE_SIZE, IMAGE_SIZE)
    assert set(vars(fit_images)) == {"_length", "_load_image"}


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


@pytest.mark.parametrize("name", PROTOCOLS.names())
@pytest.mark.parametrize("method", ["centre_prior", "dummy"])
def test_protocol_scores_every_declared_metric(name, method, tmp_path):
    spec = PROTOCOLS.get(name).spec
    if not spec.needs <= METHODS.get(method).produces:
        pytest.skip(f"{method} does not produce {sorted(spec.needs)}")
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
                   seed=0, run_id="t", num_parts=model.num_parts, preset="smoke", git_hash="x", date="d")
    records = score(model, resolved, request, context)
    declared = {m.name for m in spec.metric_specs(resolved.protocol.options)}
    assert {r["metric"] for r in records} == declared
    for r in records:
        assert np.isfinite(r["value"]) and r["n_eval"] > 0
