"""Mixed precision (``methods.common.precision``) in every trained method: smoke runs with
``amp=bf16`` through the CLI, the ``Updater`` itself (fp16 loss scaling on the CPU, bf16
autocast, its state), a resumed fp16 segmenter, the one-line errors of a bad ``amp`` and of a
global batch that does not split over the ranks, and the rank's slice of the global batch."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from segbench.benchmark.errors import UserError
from segbench.methods.common.parallel import World
from segbench.methods.common.precision import AMP_MODES, Updater
from tests.conftest import run_cli_here

pytestmark = pytest.mark.usefixtures("one_thread")

SMOKE = ("--protocol", "synthetic_parts", "--preset", "smoke", "--limit", "8", "--no-progress", "--device", "cpu",
         "--threads", "1")


def _amps_in(info) -> list[str]:
    """Every ``amp`` value anywhere in a fit_info / stats structure."""
    if isinstance(info, dict):
        return [v for k, v in info.items() if k == "amp"] + [a for v in info.values() for a in _amps_in(v)]
    if isinstance(info, list):
        return [a for v in info for a in _amps_in(v)]
    return []


@pytest.mark.parametrize("method", ["ganseg", "latent_direction", "liu_parts"])
def test_smoke_run_with_bf16_records_and_uses_it(method, tmp_path):
    res = run_cli_here("run", "--method", method, *SMOKE, "--set", "amp=bf16", "--out", str(tmp_path))
    assert res.returncode == 0, res.stderr[-2000:]
    (run_dir,) = (tmp_path / "synthetic_parts" / method).iterdir()
    config = json.loads((run_dir / "config.json").read_text())
    assert config["method_config"]["amp"] == "bf16"
    fit_info = json.loads((run_dir / "fit_info.json").read_text())
    amps = _amps_in(fit_info)
    # every training stage reports the precision it ran at (ganseg: GAN + segmenter; latent_direction:
    # DCGAN + segmenter (+ the top-level record); liu_parts: its one stage)
    assert amps and set(amps) == {"bf16"} and len(amps) >= (1 if method == "liu_parts" else 2), fit_info
    rows = [json.loads(line) for line in (run_dir / "stats.jsonl").read_text().splitlines()]
    trained = [r for r in rows if "peak_rss_mb" in r]  # the training loops' rows
    assert trained and all(r["world_size"] == 1 and r["images_s"] > 0 for r in trained)


@pytest.mark.parametrize("method", ["ganseg", "latent_direction", "liu_parts"])
def test_an_invalid_amp_is_a_one_line_error(method, tmp_path):
    res = run_cli_here("run", "--method", method, *SMOKE, "--set", "amp=fp32", "--out", str(tmp_path), "--dry-run")
    assert res.returncode == 2
    message = res.stderr.strip()
    assert "\n" not in message and "amp" in message and "fp32" in message, message


# ----------------------------------------------------------------------------- Updater

def _tiny_model() -> torch.nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                                   torch.nn.Linear(4 * 8 * 8, 2))


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(4, 3, 8, 8, generator=g), torch.randint(0, 2, (4,), generator=g)


def test_fp16_on_cpu_takes_steps_and_its_scaler_state_round_trips():
    model = _tiny_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    updater = Updater("fp16", "cpu")
    x, y = _batch()
    before = [p.detach().clone() for p in model.parameters()]
    for _ in range(3):
        with updater.autocast():
            logits = model(x)
        assert logits.dtype == torch.float16
        updater.step(F.cross_entropy(logits.float(), y), opt, "opt")
    assert all(not torch.equal(a, b) for a, b in zip(before, model.parameters()))  # finite: no step skipped
    state = updater.state_dict()
    assert state["amp"] == "fp16" and set(state["scalers"]) == {"opt"}
    assert state["scalers"]["opt"]["_growth_tracker"] == 3
    again = Updater("fp16", "cpu")
    again.load_state_dict(state)
    assert again.state_dict() == state and again.describe() == updater.describe()
    assert updater.describe()["loss_scale"] == {"opt": state["scalers"]["opt"]["scale"]}


def test_fp16_skips_a_step_whose_gradients_overflow_and_lowers_the_scale():
    model = _tiny_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    updater = Updater("fp16", "cpu")
    x, y = _batch()
    before = [p.detach().clone() for p in model.parameters()]
    with updater.autocast():
        logits = model(x)
    updater.step(F.cross_entropy(logits.float(), y) * 1e30, opt, "opt")  # scaled gradients are inf
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert updater.describe()["loss_scale"]["opt"] == 2.0 ** 15


def test_bf16_autocast_runs_the_network_in_bf16_and_enabled_false_in_fp32():
    model = _tiny_model()
    x, _ = _batch()
    updater = Updater("bf16", torch.device("cpu"))
    with updater.autocast():
        assert model(x).dtype == torch.bfloat16
        with updater.autocast(enabled=False):
            assert model(x).dtype == torch.float32
    assert model(x).dtype == torch.float32
    with Updater("off", "cpu").autocast():
        assert model(x).dtype == torch.float32
    assert Updater("bf16", "cpu").describe() == {"amp": "bf16"}  # no scaler without fp16


@pytest.mark.parametrize("amp", ["fp32", "", "BF16", None])
def test_an_invalid_amp_raises(amp):
    assert amp not in AMP_MODES
    with pytest.raises(ValueError, match="amp must be one of"):
        Updater(amp, "cpu")


# ----------------------------------------------------------------------------- the segmenter loop

def test_an_fp16_segmenter_resumes_bit_identically_with_its_loss_scale(tmp_path):
    from segbench.methods.common.segmenter import train_segmenter
    from tests.test_segmenter import SQUARES, TINY

    cfg = replace(TINY, steps=4, checkpoint_every=2, log_every=2)
    straight, info = train_segmenter(cfg, SQUARES, seed=2, device="cpu", progress=False, amp="fp16")
    assert info["amp"] == "fp16" and info["world_size"] == 1 and "opt" in info["loss_scale"]
    train_segmenter(replace(cfg, steps=2), SQUARES, seed=2, device="cpu", progress=False, amp="fp16",
                    checkpoint_dir=tmp_path)
    assert torch.load(tmp_path / "segmenter.pt", weights_only=True)["settings"]["amp"] == "fp16"
    resumed, again = train_segmenter(cfg, SQUARES, seed=2, device="cpu", progress=False, amp="fp16",
                                     checkpoint_dir=tmp_path)
    assert again["resumed_from_step"] == 2 and again["loss_scale"] == info["loss_scale"]
    for k, v in straight.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k
    with pytest.raises(UserError, match="changed: amp"):  # the precision is not a resumable field
        train_segmenter(replace(cfg, steps=6), SQUARES, seed=2, device="cpu", progress=False, amp="bf16",
                        checkpoint_dir=tmp_path)


def _fake_world(monkeypatch, module, rank: int, size: int) -> None:
    monkeypatch.setattr(module, "world", lambda: World(rank=rank, size=size))


def test_a_global_batch_that_does_not_split_is_one_line(monkeypatch, tmp_path):
    from segbench.methods.common import segmenter
    from segbench.methods.context import FitContext
    from segbench.methods.latent_direction import dcgan
    from segbench.methods.latent_direction.method import LatentDirection
    from segbench.methods.liu_parts import train as liu_train
    from segbench.methods.liu_parts.method import LiuParts
    from tests.test_segmenter import SQUARES, TINY

    ctx = FitContext(seed=0, run_dir=tmp_path, progress=False)
    for module in (segmenter, dcgan, liu_train):
        _fake_world(monkeypatch, module, 0, 3)
    with pytest.raises(UserError, match=r"segmenter.batch_size=4 does not split over 3 processes") as err:
        segmenter.train_segmenter(TINY, SQUARES, seed=0, device="cpu", progress=False)
    assert "\n" not in str(err.value)
    with pytest.raises(UserError, match=r"generator.train_batch_size=4 does not split over 3"):
        dcgan.train_dcgan(LatentDirection.config_for("smoke", {}).generator, [], ctx)
    with pytest.raises(UserError, match=r"batch_size=4 does not split over 3"):
        liu_train.train_liu(LiuParts.config_for("smoke", {"num_parts": 2}), [], ctx)


def test_a_rank_trains_the_segmenter_on_its_slice_of_the_global_batch(monkeypatch):
    from segbench.methods.common import segmenter
    from tests.test_segmenter import TINY

    def numbered(batch_size: int, generator: torch.Generator):
        """Pair i of a draw is uniformly (start + i) / 100; one surplus pair on every draw."""
        start = int(torch.randint(0, 50, (), generator=generator))
        n = batch_size + 1
        values = (start + torch.arange(n, dtype=torch.float32)) / 100
        return values.view(n, 1, 1, 1).expand(n, 3, 16, 16).contiguous(), torch.zeros(n, 16, 16, dtype=torch.int64)

    class Surplus:  # a keep_surplus source (as latent_direction's): batches of >= batch_size pairs
        num_classes, keep_surplus = 2, True

        def pairs(self, batch_size: int, generator: torch.Generator):
            return numbered(batch_size, generator)

    seen: list[torch.Tensor] = []
    real_input = segmenter.model_input

    def recording(images, image_size, keep_aspect=False):
        seen.append(images[:, 0, 0, 0].clone())
        return real_input(images, image_size, keep_aspect)

    monkeypatch.setattr(segmenter, "model_input", recording)
    _fake_world(monkeypatch, segmenter, 1, 2)
    segmenter.train_segmenter(replace(TINY, steps=2), Surplus(), seed=0, device="cpu", progress=False)
    rng = torch.Generator().manual_seed(0 + segmenter.PAIR_SEED_OFFSET)
    for got in seen:  # the global batch of 5 is trimmed to 4 (two ranks); rank 1 keeps pairs 2 and 3
        images, _ = numbered(TINY.batch_size, rng)
        assert torch.equal(got, images[2:4, 0, 0, 0])
    assert len(seen) == 2


def test_gan_snapshot_settings_omit_new_fields_at_their_old_values():
    """Snapshots written before `amp` and `generator.batchnorm` existed stay resumable: those
    fields join the settings only when they differ from what such snapshots were trained with."""
    import dataclasses

    from segbench.methods.ganseg.config import GANSegConfig
    from segbench.methods.ganseg.train import snapshot_settings

    plain = snapshot_settings(GANSegConfig(), seed=0)
    assert "amp" not in plain and "batchnorm" not in plain["generator"] and plain["seed"] == 0
    changed = snapshot_settings(dataclasses.replace(
        GANSegConfig(), amp="bf16", generator=dataclasses.replace(GANSegConfig().generator, batchnorm=False)), seed=0)
    assert changed["amp"] == "bf16" and changed["generator"]["batchnorm"] is False
