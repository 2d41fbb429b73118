"""Early, complete config validation: every field with a domain is checked when a config is
resolved (``Method.config_for`` -> ``resolve_config``, so ``run --dry-run`` is a real preflight),
a violation is one line naming the dotted field and its domain; ``RESUMABLE_FIELDS`` per method
and the training snapshots that leave them out."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field, replace
from typing import Literal, Optional

import pytest
import torch

from segbench.benchmark.config import MAX_PARTS, apply_overrides, domain, resolve_config, validate_config
from segbench.benchmark.errors import UserError
from tests.conftest import run_cli_here

pytestmark = pytest.mark.usefixtures("one_thread")


# ----------------------------------------------------------------------------- the mechanism

@dataclass(frozen=True)
class Inner:
    width: int = domain(8, ge=1)
    mode: Literal["a", "b"] = "a"

    def validate(self, prefix: str = "") -> None:
        if self.mode == "b" and self.width % 2:
            raise UserError(f"{prefix}width={self.width}: mode b needs an even width")


@dataclass(frozen=True)
class Cfg:
    num_parts: int = 4  # no metadata: the Method contract's 1..MAX_PARTS applies
    steps: int = domain(10, ge=0)
    lr: float = domain(1e-3, gt=0)
    betas: tuple[float, float] = domain((0.5, 0.9), ge=0, lt=1)
    sizes: tuple[int, ...] = domain((16, 32), ge=8)
    scale: float = 1.0  # no metadata: only finite
    run: Optional[str] = None
    colour: str = domain("red", choices=("red", "blue"))
    inner: Inner = field(default_factory=Inner)

    def validate(self) -> None:
        if self.steps and self.steps < len(self.sizes):
            raise UserError(f"steps={self.steps}: needs at least one step per size")


PRESETS = {"paper": {}, "quick": {}, "smoke": {}}


@pytest.mark.parametrize("overrides,message", [
    ({"steps": "-5"}, "steps=-5: must be an integer >= 0"),
    ({"lr": "nan"}, "lr=nan: must be a finite number > 0"),
    ({"lr": "-1"}, "lr=-1.0: must be a finite number > 0"),
    ({"lr": "0"}, "lr=0.0: must be a finite number > 0"),
    ({"scale": "inf"}, "scale=inf: must be a finite number"),
    ({"betas": "0.5"}, "--set betas=0.5: expected 2 comma-separated values"),
    ({"betas": "0.5,1.0"}, r"betas=\(0.5,1.0\): each value must be a finite number >= 0 and < 1"),
    ({"betas": 0.5}, r"betas=0.5: must be a tuple of 2 values"),  # a preset giving a scalar
    ({"sizes": "4,32"}, r"sizes=\(4,32\): each value must be an integer >= 8"),
    ({"sizes": ""}, r"sizes=\(\): needs at least one value"),
    ({"num_parts": "0"}, f"num_parts=0: must be an integer >= 1 and <= {MAX_PARTS}"),
    ({"num_parts": "100000"}, f"num_parts=100000: must be an integer >= 1 and <= {MAX_PARTS}"),
    ({"num_parts": 2.5}, "num_parts=2.5: must be an integer"),
    ({"steps": True}, "steps=True: must be an integer"),
    ({"colour": "green"}, "colour='green': must be one of red, blue"),
    ({"inner.width": "0"}, "inner.width=0: must be an integer >= 1"),
    ({"inner.mode": "b", "inner.width": "3"}, "inner.width=3: mode b needs an even width"),  # nested hook + prefix
    ({"steps": "1"}, "steps=1: needs at least one step per size"),  # the config's own hook
])
def test_each_violation_is_one_line_naming_the_dotted_field(overrides, message):
    with pytest.raises(UserError, match=message) as info:
        resolve_config(Cfg, PRESETS, "paper", overrides)
    assert "\n" not in str(info.value)


def test_valid_configs_pass_and_domain_rejects_unknown_keys():
    cfg = resolve_config(Cfg, PRESETS, "paper", {"steps": "0", "lr": "3e-4", "sizes": "8", "run": "none"})
    assert (cfg.steps, cfg.sizes, cfg.run) == (0, (8,), None)
    validate_config(Cfg())
    with pytest.raises(TypeError, match="unknown keys"):
        domain(1, greater=0)
    # presets are checked too (a preset with a bad value fails at resolution, naming the field)
    with pytest.raises(UserError, match="steps=-1"):
        resolve_config(Cfg, {**PRESETS, "smoke": {"steps": -1}}, "smoke")
    # overrides alone do not validate (presets may pass through intermediate states)
    assert apply_overrides(Cfg(), {"steps": "-1"}).steps == -1


# ----------------------------------------------------------------------------- the methods

def _methods():
    from segbench.methods.baselines import CentrePrior, Dummy
    from segbench.methods.ganseg.method import GANSeg
    from segbench.methods.latent_direction.method import LatentDirection
    return {"ganseg": GANSeg, "latent_direction": LatentDirection, "centre_prior": CentrePrior, "dummy": Dummy}


def test_every_preset_and_dataset_configuration_is_valid():
    for name, cls in _methods().items():
        for preset in cls.PRESETS:
            for dataset in (None, *cls.DATASET_PRESETS):
                validate_config(cls.config_for(preset, dataset=dataset))


def _field(config, dotted):
    for part in dotted.split("."):
        assert part in {f.name for f in dataclasses.fields(config)}, dotted
        config = getattr(config, part)
    return config


def test_resumable_fields_name_real_fields_and_include_the_learning_rates():
    methods = _methods()
    expected_lrs = {"ganseg": {"lr_g", "lr_d", "segmenter.lr"},
                    "latent_direction": {"generator.train_lr", "direction.lr", "segmenter.lr"}}
    for name, cls in methods.items():
        fields = cls.RESUMABLE_FIELDS
        assert isinstance(fields, tuple) and len(set(fields)) == len(fields)
        for dotted in fields:
            _field(cls.Config(), dotted)
        assert expected_lrs.get(name, set()) <= set(fields), name
        # nothing that changes what a snapshot means
        assert not {"num_parts", "batch_size", "segmenter.arch", "segmenter.batch_size", "betas"} & set(fields)


@pytest.mark.parametrize("method,sets,message", [
    ("ganseg", ["betas=0.5"], "--set betas=0.5: expected 2 comma-separated values"),
    ("ganseg", ["lr_g=nan"], "lr_g=nan: must be a finite number > 0"),
    ("ganseg", ["lr_g=-1"], "lr_g=-1.0: must be a finite number > 0"),
    ("ganseg", ["num_parts=100000"], "num_parts=100000: must be an integer >= 1 and <= 64"),
    ("ganseg", ["num_threads=-3"], "num_threads=-3: must be an integer >= 0"),
    ("ganseg", ["segmenter.steps=-5"], "segmenter.steps=-5: must be an integer >= 0"),
    ("ganseg", ["steps=-5"], "steps=-5: must be an integer >= 0"),
    ("ganseg", ["num_parts=0"], "num_parts=0: must be an integer >= 1"),
    ("ganseg", ["segmenter.batch_size=1"], "segmenter.batch_size=1: must be an integer >= 2"),
    ("ganseg", ["batch_size=1"], "batch_size=1: must be an integer >= 2"),
    ("ganseg", ["image_size=4"], "image_size=4: must be an integer >= 8"),
    ("ganseg", ["checkpoint_every=-1"], "checkpoint_every=-1: must be an integer >= 0"),
    ("ganseg", ["log_every=0"], "log_every=0: must be an integer >= 1"),
    ("ganseg", ["segmenter.lr=0"], "segmenter.lr=0.0: must be a finite number > 0"),
    ("ganseg", ["image_size=64", "generator.resolutions=16,64"], "each stage must be x1 or x2"),
    ("latent_direction", ["direction.steps=-1"], "direction.steps=-1: must be an integer >= 0"),
    ("latent_direction", ["direction.lr=nan"], "direction.lr=nan: must be a finite number > 0"),
    ("latent_direction", ["generator.train_steps=-1"], "generator.train_steps=-1: must be an integer >= 0"),
    ("latent_direction", ["generator.train_batch_size=1"], "generator.train_batch_size=1: must be an integer >= 2"),
    ("latent_direction", ["generator.train_betas=0.5,1"], "generator.train_betas=(0.5,1.0): each value"),
    ("latent_direction", ["generator.train_image_size=24"], "generator.train_image_size=24: must be a power of two"),
    ("latent_direction", ["segmenter.image_size=8"], "segmenter.image_size=8: must be an integer >= 16"),
    ("centre_prior", ["num_parts=100000"], "num_parts=100000: must be an integer >= 1 and <= 64"),
    ("centre_prior", ["radius_frac=-0.1"], "radius_frac=-0.1: must be a finite number > 0"),
])
def test_dry_run_is_a_real_preflight(method, sets, message, tmp_path):
    args = ["run", "--method", method, "--protocol", "synthetic_parts", "--out", str(tmp_path / "runs")]
    for item in sets:
        args += ["--set", item]
    for extra in (["--dry-run"], ["--preset", "smoke", "--no-progress"]):
        out = run_cli_here(*args, *extra)
        assert out.returncode == 2, (out.stdout, out.stderr)
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], lines
        assert "Traceback" not in out.stderr
    assert not (tmp_path / "runs").exists()  # rejected before any folder is made, GAN never trained


def test_direct_construction_is_validated_too():
    from segbench.methods.ganseg.config import GANSegConfig
    from segbench.methods.ganseg.method import GANSeg
    from segbench.methods.latent_direction.directions import DirectionConfig
    from segbench.methods.latent_direction.method import LatentDirection, LatentDirectionConfig

    with pytest.raises(UserError, match="steps=-1"):
        GANSeg(GANSegConfig(steps=-1))
    with pytest.raises(UserError, match="direction.steps=-1"):
        LatentDirection(LatentDirectionConfig(direction=DirectionConfig(steps=-1)))


# ----------------------------------------------------------------------------- snapshots and resumable fields

def test_a_segmenter_snapshot_continues_with_a_changed_lr_and_runs_at_it(tmp_path, monkeypatch):
    from segbench.methods.common.segmenter import train_segmenter
    from tests.test_segmenter import SQUARES, TINY

    train_segmenter(replace(TINY, steps=2), SQUARES, seed=0, device="cpu", progress=False, checkpoint_dir=tmp_path)
    seen, real_step = [], torch.optim.Adam.step

    def step(self, *args, **kwargs):  # the lr each optimiser step runs at
        seen.append(self.param_groups[0]["lr"])
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", step)
    _, info = train_segmenter(replace(TINY, steps=4, lr=1e-4, log_every=1, checkpoint_every=1), SQUARES,
                              seed=0, device="cpu", progress=False, checkpoint_dir=tmp_path)
    assert info["resumed_from_step"] == 2 and seen == [1e-4, 1e-4]
    saved = torch.load(tmp_path / "segmenter.pt", weights_only=True)
    assert saved["optimizers"]["opt"]["param_groups"][0]["lr"] == 1e-4 and "lr" not in saved["settings"]
    with pytest.raises(UserError, match="changed: batch_size"):  # a field that is not resumable
        train_segmenter(replace(TINY, steps=6, batch_size=6), SQUARES, seed=0, device="cpu", progress=False,
                        checkpoint_dir=tmp_path)


def test_scheduled_lr_keeps_its_decay_when_the_lr_changes():
    from segbench.methods.common.loop import keep_configured_lr
    from segbench.methods.common.segmenter import SegmenterConfig, lr_scheduler

    p = torch.zeros(1, requires_grad=True)
    cfg = SegmenterConfig(lr=1e-2, lr_decay_at=2, lr_decay_factor=0.5)
    opt = torch.optim.Adam([p], lr=cfg.lr)
    sched = lr_scheduler(cfg, opt)
    for _ in range(3):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(5e-3)
    before = dict(opt.param_groups[0])
    keep_configured_lr(opt, 1e-2, sched)  # unchanged lr: untouched (exact resume)
    assert opt.param_groups[0] == before
    keep_configured_lr(opt, 1e-4, sched)
    assert opt.param_groups[0]["lr"] == pytest.approx(5e-5) and opt.param_groups[0]["initial_lr"] == 1e-4
    assert sched.base_lrs == [1e-4]
    assert math.isclose(opt.param_groups[0]["lr"] / opt.param_groups[0]["initial_lr"], 0.5)


def test_gan_dcgan_and_direction_snapshots_leave_out_the_resumable_fields(tmp_path):
    from segbench.methods.context import FitContext
    from segbench.methods.ganseg.method import GANSeg
    from segbench.methods.ganseg.train import train_gan
    from segbench.methods.latent_direction.dcgan import train_dcgan
    from segbench.methods.latent_direction.method import LatentDirection
    from tests.test_ganseg import Images

    cfg = GANSeg.config_for("smoke", {"num_parts": 3, "steps": 2, "checkpoint_every": 1})
    ctx = FitContext(seed=0, run_dir=tmp_path / "gan", progress=False)
    train_gan(cfg, Images(), ctx)
    bigger = replace(cfg, steps=3, lr_g=1e-6, lr_d=2e-6, log_every=1, checkpoint_every=3, sample_every=1,
                     num_threads=1, preload_max_mb=1)
    _, info = train_gan(bigger, Images(), ctx)
    assert info["resumed_from_step"] == 2 and info["gan_steps_this_call"] == 1
    saved = torch.load(tmp_path / "gan" / "checkpoints" / "training" / "gan" / "gan.pt", weights_only=True)
    assert [saved["optimizers"][k]["param_groups"][0]["lr"] for k in ("opt_g", "opt_d")] == [1e-6, 2e-6]
    assert not {"lr_g", "lr_d", "steps", "segmenter"} & set(saved["settings"])

    gcfg = LatentDirection.config_for("smoke", {"generator.train_steps": "2"}).generator
    ctx = FitContext(seed=0, run_dir=tmp_path / "dcgan", progress=False)
    train_dcgan(gcfg, Images(n=6, size=16), ctx)
    _, info = train_dcgan(replace(gcfg, train_steps=3, train_lr=1e-5), Images(n=6, size=16), ctx)
    assert info["training"]["resumed_from_step"] == 2 and info["training"]["lr"] == 1e-5
    saved = torch.load(tmp_path / "dcgan" / "checkpoints" / "training" / "dcgan" / "dcgan.pt", weights_only=True)
    assert "lr" not in saved["settings"] and saved["optimizers"]["G"]["param_groups"][0]["lr"] == 1e-5

    from segbench.methods.latent_direction.directions import DirectionConfig, optimise_direction
    from tests.test_latent_direction import ToyGenerator

    dcfg = DirectionConfig(steps=2, batch_size=2, checkpoint_every=1)
    optimise_direction(ToyGenerator(), dcfg, sign=1.0, seed=0, device="cpu", checkpoint_dir=tmp_path / "dir")
    found = optimise_direction(ToyGenerator(), replace(dcfg, steps=3, lr=1e-4), sign=1.0, seed=0, device="cpu",
                               checkpoint_dir=tmp_path / "dir")
    assert found.report["resumed_from_step"] == 2
    saved = torch.load(tmp_path / "dir" / "direction.pt", weights_only=True)
    assert "lr" not in saved["settings"] and saved["optimizers"]["adam"]["param_groups"][0]["lr"] == 1e-4
