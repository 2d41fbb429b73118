from dataclasses import FrozenInstanceError, dataclass, field
from typing import Literal, Optional

import pytest

from segbench.benchmark.config import apply_overrides, dumps, from_jsonable, parse_set_args, resolve_config
from segbench.benchmark.errors import UserError


@dataclass(frozen=True)
class Inner:
    run: Optional[str] = None
    width: int = 64


@dataclass(frozen=True)
class Cfg:
    num_parts: int = 8
    lr: float = 1e-4
    heatmap: Literal["gaussian", "linear"] = "gaussian"
    use_area: bool = True
    widths: tuple[int, ...] = (512, 256)
    inner: Inner = field(default_factory=Inner)


PRESETS = {"paper": {}, "quick": {"num_parts": 4, "widths": (64, 32)}, "smoke": {"num_parts": 2}}


def test_presets_then_typed_overrides():
    cfg = resolve_config(Cfg, PRESETS, "quick", {"lr": "3e-4", "use_area": "false", "heatmap": "linear",
                                                 "widths": "8,4,2", "inner.run": "runs/x", "inner.width": "16"})
    assert cfg == Cfg(num_parts=4, lr=3e-4, heatmap="linear", use_area=False, widths=(8, 4, 2),
                      inner=Inner(run="runs/x", width=16))
    with pytest.raises(FrozenInstanceError):
        cfg.lr = 1.0


@pytest.mark.parametrize("key,value,message", [
    ("num_part", "3", "did you mean num_parts"),
    ("num_parts", "three", "expected int"),
    ("heatmap", "cubic", "must be one of gaussian, linear"),
    ("use_area", "maybe", "expected a bool"),
    ("lr.x", "1", "has no sub-keys"),
    ("inner.depth", "1", "unknown config key 'depth'"),
])
def test_bad_overrides_are_user_errors(key, value, message):
    with pytest.raises(UserError, match=message):
        apply_overrides(Cfg(), {key: value})


def test_unknown_preset():
    with pytest.raises(UserError, match="did you mean quick"):
        resolve_config(Cfg, PRESETS, "quik")


def test_set_args_need_equals_sign():
    assert parse_set_args(["a=1", "b.c = x"]) == {"a": "1", "b.c": "x"}
    with pytest.raises(UserError):
        parse_set_args(["novalue"])


def test_json_round_trip():
    import json
    cfg = Cfg(widths=(1, 2), inner=Inner(run="r"))
    assert from_jsonable(Cfg, json.loads(dumps(cfg))) == cfg
