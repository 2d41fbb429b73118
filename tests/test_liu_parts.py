"""liu_parts (Liu et al. CVPR 2021) as a method: config and presets, one smoke fit (predictions,
stats, figures, fit info), the cross-reconstruction direction of Eq. 4, bit-identical resume, the
shipped conformance suite, and the ``liu`` regression variant on the method's native map size.
The networks, TPS warps and losses have their own tests (tests/test_liu_networks.py and others)."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

from segbench.benchmark.check_plugin import CHECKS, FAIL, PluginHarness, run_check
from segbench.benchmark.config import dumps
from segbench.benchmark.errors import UserError
from segbench.datasets import DATASETS
from segbench.methods import METHODS
from segbench.methods.base import PARTS
from segbench.methods.common.runtime import torch_threads
from segbench.methods.context import FitContext, read_stats
from segbench.methods.liu_parts.config import CODE_VARIANT, LiuPartsConfig, native_map_size, total_steps
from segbench.methods.liu_parts.method import LiuParts
from segbench.methods.liu_parts.train import cross_reconstruct, train_liu
from segbench.protocols import landmark_eval
from segbench.protocols.metrics.centres import LIU_GRID_SIZE, liu_grid_size, soft_argmax_centres_liu
from segbench.protocols.metrics import landmarks

pytestmark = pytest.mark.usefixtures("one_thread")
SIZE, K = 32, 3


def smoke(**overrides) -> LiuPartsConfig:
    return LiuParts.config_for("smoke", {"num_parts": K, **overrides})


class Images(torch.utils.data.Dataset):
    def __init__(self, n: int = 6, size: int = SIZE) -> None:
        self.x = torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(5))

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.x[i]


@pytest.fixture(scope="module")
def data():
    return DATASETS.get("synthetic_parts")(image_size=SIZE, n_train=16, n_regression_fit=8, n_test=8)


@pytest.fixture(scope="module")
def fitted(data, tmp_path_factory):
    """One smoke fit on 16 synthetic_parts images, shared by the tests below."""
    run_dir = tmp_path_factory.mktemp("liu_fit")
    method = LiuParts(smoke())
    with torch_threads(1):
        method.fit(data.split("train").fit_images(), FitContext(seed=0, run_dir=run_dir, progress=False))
    return method, run_dir


# ----------------------------------------------------------------------------- config

def test_registered_and_paper_defaults():
    assert METHODS.get("liu_parts") is LiuParts and LiuParts.produces == frozenset({PARTS})
    paper = LiuParts.config_for("paper")
    assert paper == LiuPartsConfig()
    assert (paper.image_size, paper.appearance_blocks, paper.shape_blocks, paper.width) == (128, (3, 4, 6), (2, 2, 2), 64)
    assert (paper.layer3_stride, paper.init, paper.arcface_scale, paper.arcface_rows, paper.arcface_divide,
            paper.fg_reduce, paper.bg_form, paper.perceptual.network, paper.perceptual.form) == \
        (1, "paper_normal", 20.0, "parts", "parts", "mean", "paper", "vgg19", "paper")
    assert (paper.lr, paper.weight_decay, paper.betas, paper.batch_size, paper.epochs) == (1e-4, 5e-4, (0.9, 0.999), 32, 30)
    assert paper.weights() == {"rec": 1.5, "fg": 1.5, "bg": 0.5, "cls": 1.0}  # Tab. A1 CelebA, code order
    assert native_map_size(paper) == 32 and native_map_size(replace(paper, layer3_stride=2)) == 16
    assert total_steps(paper, 100) == 94  # ceil(30 * 100 / 32)
    assert total_steps(replace(paper, steps=7), 100) == 7


def test_quick_and_code_variant_and_weights():
    quick = LiuParts.config_for("quick")
    assert (quick.image_size, quick.width, quick.decoder_hidden, quick.batch_size, quick.steps, quick.lr) == \
        (64, 32, 8, 16, 1200, 1e-3)
    assert native_map_size(quick) == 16 and quick.perceptual.network == "pixel"
    assert quick.weights() == {"rec": 1.5, "fg": 1.5, "bg": 0.3, "cls": 1.0}
    code = LiuParts.config_for("paper", {k: str(v) for k, v in CODE_VARIANT.items()})
    assert (code.layer3_stride, code.arcface_scale, code.arcface_rows, code.perceptual.form) == \
        (2, 30.0, "parts_plus_bg", "code")
    printed = LiuParts.config_for("paper", {"loss_weights": "as_printed"})
    assert printed.weights() == {"rec": 1.5, "fg": 0.5, "bg": 1.0, "cls": 1.5}
    assert LiuParts.config_for("paper", dataset="cub").weights() == {"rec": 1.5, "fg": 1.5, "bg": 0.3, "cls": 1.0}
    ablated = LiuParts.config_for("paper", {"no_bg": "true", "lambda_fg": "2"})
    assert ablated.weights() == {"rec": 1.5, "fg": 2.0, "bg": 0.0, "cls": 1.0}


@pytest.mark.parametrize("key,value,fragment", [
    ("layer3_stride", "3", "must be one of 1, 2"),
    ("init", "xavier", "must be one of paper_normal, code_kaiming"),
    ("perceptual.network", "vgg", "must be one of vgg19, inception, pixel"),
    ("arcface_rows", "all", "must be one of parts, parts_plus_bg"),
    ("lambda_rec", "-1", "lambda_rec=-1.0: must be a finite number >= 0"),
    ("image_size", "30", "image_size=30: must be a multiple of 4"),
    ("batch_size", "1", "batch_size=1"),
    ("arcface_scale", "0", "arcface_scale=0.0"),
])
def test_invalid_values_are_one_line_errors(key, value, fragment):
    with pytest.raises(UserError) as info:
        LiuParts.config_for("paper", {key: value})
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_all_terms_off_is_refused():
    with pytest.raises(UserError, match="nothing left to train"):
        LiuParts.config_for("paper", {"no_rec": "1", "no_fg": "1", "no_bg": "1", "no_cls": "1"})
    with pytest.raises(UserError, match="image_size=36: must be a multiple of 8"):
        LiuParts.config_for("paper", {"layer3_stride": "2", "image_size": "36"})


# ----------------------------------------------------------------------------- the fit

def test_smoke_fit_predicts_valid_probabilities(fitted):
    method, _ = fitted
    images = torch.rand(3, 3, 40, 40, generator=torch.Generator().manual_seed(1))
    probs = method.predict(images).part_probs
    assert probs.shape == (3, K + 1, 40, 40) and probs.device.type == "cpu"
    assert torch.allclose(probs.sum(1), torch.ones(3, 40, 40), atol=1e-5)
    single = torch.cat([method.predict(images[i:i + 1]).part_probs for i in range(3)])
    assert (single - probs).abs().max() < 1e-5  # eval-mode BatchNorm: no batch dependence
    assert method.native_map_size == SIZE // 4


def test_fit_writes_stats_figures_and_info(fitted):
    _, run_dir = fitted
    rows = [r for r in read_stats(run_dir / "stats.jsonl") if r.get("phase") == "liu"]
    assert [r["step"] for r in rows] == [1, 2, 3]
    for r in rows:
        assert {"rec", "fg", "bg", "cls", "total", "it_s", "area_bg", "area_parts"} <= set(r)
        assert len(r["area_parts"]) == K and abs(r["area_bg"] + sum(r["area_parts"]) - 1) < 1e-3
    info = json.loads((run_dir / "fit_info.json").read_text())
    assert info["steps"] == 3 and info["native_map_size"] == 8
    assert info["perceptual"]["network"] == "pixel"
    assert set(info["parameters"]) == {"appearance", "shape", "decoder", "arcface"}
    assert (run_dir / "figures" / "liu_parts_pairs.png").is_file()
    assert (run_dir / "checkpoints" / "training" / "liu" / "liu.pt").is_file()


def test_save_load_round_trip(fitted, tmp_path):
    method, _ = fitted
    method.save(tmp_path)
    loaded = LiuParts.load(tmp_path)
    assert loaded.config == method.config
    images = torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(2))
    assert torch.equal(method.predict(images).part_probs, loaded.predict(images).part_probs)
    state = torch.load(tmp_path / "state.pt", weights_only=True)
    assert {k.split(".")[0] for k in state} == {"appearance", "shape", "decoder", "arcface"}
    assert json.loads((tmp_path / "method_config.json").read_text()) == json.loads(dumps(method.config))


def test_cross_reconstruction_takes_shape_from_target_and_appearance_from_other_view():
    """Eq. 4: x^2 = D(expand(S2, F1)). With a constant shape map, x^2 depends on x1 only."""
    class Const(nn.Module):
        def forward(self, x):
            return torch.zeros(x.shape[0], K + 1, 4, 4)

    class Mean(nn.Module):  # A(p) = the image's channel means everywhere
        def forward(self, x):
            return x.mean(dim=(2, 3), keepdim=True).expand(-1, -1, 4, 4)

    class FirstThree(nn.Module):
        def forward(self, a):
            return a[:, :3]

    nets = {"shape": Const(), "appearance": Mean(), "decoder": FirstThree()}
    x1, x2 = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8)
    out = cross_reconstruct(nets, x1, x2)
    assert torch.allclose(out["x2_hat"], x1.mean(dim=(2, 3), keepdim=True).expand(-1, -1, 4, 4), atol=1e-5)
    assert torch.allclose(out["x1_hat"], x2.mean(dim=(2, 3), keepdim=True).expand(-1, -1, 4, 4), atol=1e-5)


def test_code_variant_smoke_fits_with_16x_smaller_maps(tmp_path):
    cfg = smoke(**{k: v for k, v in CODE_VARIANT.items() if "." not in k}, steps=2)
    method = LiuParts(cfg)
    method.fit(Images(), FitContext(seed=0, run_dir=tmp_path, progress=False))
    assert method.native_map_size == 4
    assert method.predict(torch.rand(1, 3, SIZE, SIZE)).part_probs.shape == (1, K + 1, SIZE, SIZE)


def test_paper_init_is_normal_001():
    from segbench.methods.liu_parts.train import build_networks

    nets = build_networks(smoke(width=16), seed=0)
    w = nets["appearance"].trunk.layer1[0].conv1.weight.detach()
    assert abs(float(w.std()) - 0.01) < 0.002
    code = build_networks(smoke(width=16, init="code_kaiming"), seed=0)
    assert float(code["appearance"].trunk.layer1[0].conv1.weight.detach().std()) > 0.05  # kaiming fan_out: sqrt(2/144)


# ----------------------------------------------------------------------------- resume

def _ctx(run_dir, seed=3):
    return FitContext(seed=seed, run_dir=run_dir, progress=False)


def _state(nets, perceptual):
    state = {f"{n}.{k}": v for n, m in nets.items() for k, v in m.state_dict().items()}
    state.update({f"perceptual.{k}": v for k, v in perceptual.state_dict().items()})
    return state


def test_resume_is_bit_identical(tmp_path):
    cfg = smoke(steps=4, checkpoint_every=2, **{"perceptual.refresh_every": 3})  # a refresh after the snapshot
    data = Images(n=6)  # batch 4 of 6 images: the snapshot falls in the middle of an epoch
    straight, p_straight, _ = train_liu(cfg, data, _ctx(tmp_path / "a"))
    train_liu(replace(cfg, steps=2), data, _ctx(tmp_path / "b"))
    snapshot = torch.load(tmp_path / "b" / "checkpoints" / "training" / "liu" / "liu.pt", weights_only=True)
    assert snapshot["step"] == 2 and snapshot["extra"]["data_buffer"].numel() == 4  # 12 drawn, 8 used
    resumed, p_resumed, info = train_liu(cfg, data, _ctx(tmp_path / "b"))
    assert info["resumed_from_step"] == 2 and info["steps_this_call"] == 2
    sa, sb = _state(straight, p_straight), _state(resumed, p_resumed)
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert int(p_straight.refreshes) == 2  # 8 calls, refreshed at calls 3 and 6
    _, _, info = train_liu(cfg, data, _ctx(tmp_path / "b"))  # finished: nothing to train
    assert info["steps_this_call"] == 0
    with pytest.raises(UserError, match=r"different liu run \(changed: arcface_scale\)"):
        train_liu(replace(cfg, arcface_scale=30.0), data, _ctx(tmp_path / "b"))
    with pytest.raises(UserError, match=r"changed: seed"):
        train_liu(cfg, data, _ctx(tmp_path / "b", seed=4))


def test_resumable_fields_are_config_fields():
    names = {f for f in LiuParts.RESUMABLE_FIELDS}
    assert {"steps", "log_every", "checkpoint_every", "num_threads", "lr"} <= names
    assert names <= set(LiuPartsConfig.__dataclass_fields__)


# ----------------------------------------------------------------------------- conformance

@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    return PluginHarness(LiuParts, "liu_parts", tmp_path_factory.mktemp("check_liu_parts"))


@pytest.mark.parametrize("check", CHECKS)
def test_conformance_suite(harness, check):
    with torch_threads(1):
        result = run_check(harness, check)
    assert result.status != FAIL, result.line()


# ----------------------------------------------------------------------------- the liu variant

def test_liu_variant_uses_the_native_map_size(fitted, data, monkeypatch):
    method, _ = fitted
    assert liu_grid_size(method) == method.native_map_size == 8
    assert liu_grid_size(object()) == LIU_GRID_SIZE  # methods that report none: the code's 16 x 16
    quick, paper = LiuParts(LiuParts.config_for("quick")), LiuParts(LiuParts.config_for("paper"))
    assert (liu_grid_size(quick), liu_grid_size(paper)) == (16, 32)
    grids = []

    def spy(probs, grid_size=LIU_GRID_SIZE):
        grids.append(grid_size)
        return soft_argmax_centres_liu(probs, grid_size)

    monkeypatch.setattr(landmarks, "soft_argmax_centres_liu", spy)  # the one liu feature path
    splits = {role: data.split(role) for role in ("regression_fit", "test")}
    error, _ = landmark_eval.landmark_error(method, splits, "liu", batch_size=8, progress=False)
    assert grids and set(grids) == {8} and np.isfinite(error.value)
    # the features are Liu's soft-argmax on the pooled 8 x 8 map, background included
    probs = method.predict(torch.rand(2, 3, SIZE, SIZE)).part_probs.numpy()
    rows = landmark_eval.landmark_rows({"landmarks": 0, "landmark_visible": 0, "ref_length": 0}, probs, "liu", 8)
    assert rows["features"].shape == (2, 2 * (K + 1))
    np.testing.assert_allclose(rows["features"], soft_argmax_centres_liu(probs, 8).reshape(2, -1))


def test_nearest_upsampling_gives_the_native_map_back_to_the_liu_variant(fitted):
    method, _ = fitted
    nearest = LiuParts(replace(method.config, predict_upsample="nearest"))
    nearest.load_state_dict(method.state_dict())
    images = torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        native = torch.softmax(method.nets["shape"](images), dim=1)  # E_s at image_size: [2, K+1, 8, 8]
    probs = nearest.predict(images).part_probs
    np.testing.assert_allclose(soft_argmax_centres_liu(probs, nearest.native_map_size),
                               soft_argmax_centres_liu(native, None), rtol=1e-5, atol=1e-6)


def test_kill_9_then_resume_through_the_cli_is_bit_identical(tmp_path):
    """A real SIGKILL between snapshots (step 3 of 6, snapshot at 2), then ``run --resume``."""
    import os
    import signal
    import subprocess
    import sys

    from tests.conftest import REPO, run_cli_here

    args = ("run", "--method", "liu_parts", "--protocol", "synthetic_parts", "--preset", "smoke", "--limit", "8",
            "--no-progress", "--device", "cpu", "--threads", "1", "--set", "steps=6", "--set", "checkpoint_every=2")
    straight = run_cli_here(*args, "--out", str(tmp_path / "straight"))
    assert straight.returncode == 0, straight.stderr
    env = {**os.environ, "PYTHONPATH": str(REPO), "SEGBENCH_INJECT_KILL": "liu@3"}
    killed = subprocess.run([sys.executable, "-m", "benchmark", *args, "--out", str(tmp_path / "killed")], cwd=REPO,
                            env=env, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-1500:]
    (run_dir,) = (tmp_path / "killed").glob("synthetic_parts/liu_parts/*")
    resumed = run_cli_here("run", "--resume", str(run_dir), "--no-progress")
    assert resumed.returncode == 0, resumed.stderr
    (straight_dir,) = (tmp_path / "straight").glob("synthetic_parts/liu_parts/*")
    a, b = (torch.load(d / "checkpoints" / "final" / "state.pt", weights_only=True) for d in (straight_dir, run_dir))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    metrics = [json.loads((d / "metrics.json").read_text()) for d in (straight_dir, run_dir)]
    assert [r["value"] for r in metrics[0]] == [r["value"] for r in metrics[1]]
