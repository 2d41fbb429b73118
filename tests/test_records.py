"""Results schema 2: the record fields, what ``metric_records`` requires, how a schema-1 record is
read (``validate_record``), and FID values that do not depend on ``--batch-size``."""
import math

import numpy as np
import pytest
import torch

from segbench.benchmark.records import (READABLE_SCHEMAS, RECORD_FIELDS, SCHEMA_VERSION, metric_records,
                                        validate_record)

CONTEXT = dict(method="centre_prior", protocol="synthetic_parts", protocol_version="1", dataset="synthetic_parts",
               seed=0, run_id="20260101-000000-000000-s0", num_parts=6, preset="smoke", limit=8, batch_size=32,
               git_hash="abc123def456-dirty", train_git_hash="0123456789ab", date="2026-01-01")
SCORES = [dict(metric="fg_iou", split="test", value=np.float32(0.5), n_eval=8),
          dict(metric="err", split="test", value=3, n_eval=8)]
HIB = {"fg_iou": True, "err": False}


def test_schema_2_fields_and_order():
    assert SCHEMA_VERSION == "2" and READABLE_SCHEMAS == ("1", "2")
    assert RECORD_FIELDS == ("method", "protocol", "protocol_version", "dataset", "split", "metric", "value",
                             "higher_is_better", "seed", "run_id", "n_eval", "num_parts", "preset", "limit",
                             "batch_size", "git_hash", "train_git_hash", "date", "schema_version")


def test_metric_records_carry_limit_batch_size_and_both_hashes():
    rows = metric_records(SCORES, context=CONTEXT, higher_is_better=HIB)
    assert [tuple(r) for r in rows] == [RECORD_FIELDS] * 2
    first = rows[0]
    assert (first["limit"], first["batch_size"], first["git_hash"], first["train_git_hash"]) == \
        (8, 32, "abc123def456-dirty", "0123456789ab")
    assert first["value"] == 0.5 and type(first["value"]) is float and first["higher_is_better"] is True
    assert rows[1]["value"] == 3.0 and rows[1]["higher_is_better"] is False
    assert all(r["schema_version"] == "2" for r in rows)
    full = metric_records(SCORES, context={**CONTEXT, "limit": None}, higher_is_better=HIB)
    assert full[0]["limit"] is None


@pytest.mark.parametrize("field", ["limit", "batch_size", "git_hash", "train_git_hash"])
def test_metric_records_require_the_new_context_keys(field):
    context = {k: v for k, v in CONTEXT.items() if k != field}
    with pytest.raises(ValueError, match=field):
        metric_records(SCORES, context=context, higher_is_better=HIB)


@pytest.mark.parametrize("field, value", [("limit", 0), ("limit", "8"), ("batch_size", None), ("batch_size", 0),
                                          ("batch_size", 2.0), ("seed", True), ("train_git_hash", None)])
def test_metric_records_refuse_mistyped_context(field, value):
    with pytest.raises(ValueError, match=field):
        metric_records(SCORES, context={**CONTEXT, field: value}, higher_is_better=HIB)


def _schema_1_record(**changes):
    row = dict(method="centre_prior", protocol="synthetic_parts", protocol_version="1", dataset="synthetic_parts",
               split="test", metric="fg_iou", value=0.25, higher_is_better=True, seed=0, run_id="r", n_eval=300,
               num_parts=6, preset="paper", git_hash="0123456789ab", date="2025-01-01", schema_version="1")
    row.update(changes)
    return row


def test_schema_1_record_is_read_as_schema_2():
    row = validate_record(_schema_1_record())
    assert tuple(row) == RECORD_FIELDS
    assert (row["limit"], row["batch_size"], row["train_git_hash"]) == (None, None, "0123456789ab")
    assert row["schema_version"] == "1"  # the reader knows what it was given
    # an int protocol_version (hand-written file) is read as the string the schema says
    assert validate_record(_schema_1_record(protocol_version=2))["protocol_version"] == "2"


def test_schema_2_record_round_trips():
    (row,) = metric_records(SCORES[:1], context=CONTEXT, higher_is_better=HIB)
    assert validate_record(row) == row


@pytest.mark.parametrize("changes, message", [
    (dict(schema_version="3"), "schema_version '3'"),
    (dict(schema_version=None), "schema_version None"),
    (dict(value="0.5"), "'value'"),
    (dict(value=True), "'value'"),
    (dict(seed="0"), "'seed'"),
    (dict(higher_is_better="yes"), "'higher_is_better'"),
    (dict(n_eval=-1), "'n_eval'"),
    (dict(protocol=""), "'protocol'"),
    (dict(method=None), "'method'"),
])
def test_schema_violations_are_named(changes, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        validate_record(_schema_1_record(**changes))


def test_missing_fields_and_non_objects_are_refused():
    row = _schema_1_record()
    del row["protocol"]
    with pytest.raises(ValueError, match="lacks \\['protocol'\\]"):
        validate_record(row)
    (v2,) = metric_records(SCORES[:1], context=CONTEXT, higher_is_better=HIB)
    del v2["train_git_hash"]
    with pytest.raises(ValueError, match="train_git_hash"):
        validate_record(v2)
    with pytest.raises(ValueError, match="expected an object"):
        validate_record([1, 2])


def test_nan_passes_validation_the_reader_decides():
    assert math.isnan(validate_record(_schema_1_record(value=float("nan")))["value"])


# ---------------------------------------------------------------- FID and --batch-size


def _pooled_colour_features(images, device="cpu", **_):
    """uint8 [B,3,H,W] -> float64 [B,12]: colour means over a 2x2 grid (a stand-in feature net)."""
    x = torch.nn.functional.adaptive_avg_pool2d(images.float() / 255, 2)
    return x.flatten(1).double().numpy()


class _Reference:
    name = "all"

    def __init__(self):
        self.images = np.random.default_rng(0).integers(0, 256, size=(70, 16, 16, 3), dtype=np.uint8)

    def __len__(self):
        return len(self.images)

    def image(self, i):
        return self.images[i]


class _Sampler:
    """``sample(n, seed)``: n images from a generator seeded with ``seed`` (what the methods do)."""

    def __init__(self):
        self.calls = []

    def sample(self, n, seed):
        self.calls.append((n, seed))
        g = torch.Generator().manual_seed(seed)
        return torch.randint(0, 256, (n, 3, 16, 16), generator=g, dtype=torch.uint8)


@pytest.mark.parametrize("n_generated", ["100", "1k"])
def test_fid_does_not_depend_on_batch_size(n_generated, tmp_path, monkeypatch):
    from segbench import feature_nets
    from segbench.protocols.fid import SAMPLE_CHUNK, SAMPLE_SEED_BASE, CubPhotosFid

    monkeypatch.setattr(feature_nets, "inception_features", _pooled_colour_features)
    values, samplers = {}, {}
    for batch_size in (7, 32, 64, 1000):
        # a fresh statistics cache each time: the real side is computed under this batch size too
        monkeypatch.setenv("SEGBENCH_CACHE", str(tmp_path / f"cache{batch_size}"))
        samplers[batch_size] = _Sampler()
        (record,) = CubPhotosFid({"n_generated": n_generated}).score(
            samplers[batch_size], {"reference": _Reference()}, batch_size=batch_size, progress=False).records
        values[batch_size] = record["value"]
    assert len(set(values.values())) == 1, values  # bit-identical
    assert np.isfinite(values[32]) and values[32] > 0
    n = 100 if n_generated == "100" else 1000
    expected = [(SAMPLE_CHUNK, SAMPLE_SEED_BASE + c) for c in range(n // SAMPLE_CHUNK)]
    assert all(s.calls == expected for s in samplers.values())


def test_fid_protocols_are_version_2():
    from segbench.protocols import PROTOCOLS
    from segbench.protocols.fid import N_GENERATED_CHOICES, SAMPLE_CHUNK, FidProtocol, parse_count

    fid = [PROTOCOLS.get(n) for n in PROTOCOLS.names() if issubclass(PROTOCOLS.get(n), FidProtocol)]
    assert len(fid) == 5 and all(cls.spec.version == "2" for cls in fid)
    assert all(parse_count(c) % SAMPLE_CHUNK == 0 for c in N_GENERATED_CHOICES)  # every chunk is full
