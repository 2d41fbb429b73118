"""`python -m benchmark bench ganseg`: the per-phase table, FLOPs, schedule means, the JSONL."""
import json
from types import SimpleNamespace

from segbench.benchmark.bench import PHASES, schedule_means
from tests.conftest import run_cli_here


def _config(gp_every=4, reg_every=2, no_points=False):
    return SimpleNamespace(gp_every=gp_every, reg_every=reg_every, generator=SimpleNamespace(no_points=no_points))


def test_schedule_means_weight_each_kind_of_step_by_its_share():
    # gp_every 4, reg_every 2: kinds over one period (4 steps): (T,T) 1/4, (F,F) 1/2, (F,T) 1/4.
    per_step = {0: {"d_step_penalty": {"seconds": 4.0, "cpu_seconds": 4.0, "flops": 40},
                    "g_step_backward_adam": {"seconds": 2.0, "cpu_seconds": 2.0, "flops": 20}},
                1: {"g_step_backward_adam": {"seconds": 1.0, "cpu_seconds": 1.0, "flops": 10}},
                2: {"g_step_backward_adam": {"seconds": 3.0, "cpu_seconds": 3.0, "flops": 30}}}
    out = schedule_means(_config(), per_step)
    assert out["complete"]
    assert out["phases"]["d_step_penalty"]["seconds"] == 4.0 / 4
    assert out["phases"]["g_step_backward_adam"]["seconds"] == 2.0 / 4 + 1.0 / 2 + 3.0 / 4
    assert out["seconds"] == 1.0 + 1.75 and out["flops"] == 10 + 17.5


def test_schedule_means_say_when_a_kind_of_step_was_not_timed():
    out = schedule_means(_config(), {0: {}, 1: {}})  # no (F, T) step among the timed ones
    assert not out["complete"] and out["missing_kinds"] == [{"penalty": False, "regularisers": True}]


def test_bench_command_prints_phases_and_appends_jsonl(tmp_path):
    jsonl = tmp_path / "bench.jsonl"
    proc = run_cli_here("bench", "ganseg", "--preset", "smoke", "--steps", "3", "--warmup", "0", "--threads", "1",
                        "--stage", "all", "--jsonl", str(jsonl), "--label", "t")
    assert proc.returncode == 0, proc.stderr
    for phase in PHASES:
        assert phase in proc.stdout
    assert "GFLOP/step" in proc.stdout and "segmenter:" in proc.stdout
    (line,) = jsonl.read_text().splitlines()
    report = json.loads(line)
    sched = report["gan"]["schedule"]
    assert sched["complete"] and sched["flops"] > 0 and sched["seconds"] > 0
    assert sched["phases"]["d_step_penalty"]["flops"] > 0  # the penalty's double backward is counted
    assert report["label"] == "t" and report["amp"] == "off" and report["segmenter"]["wall_s_per_it"] > 0
    # the record names the code and the whole resolved config (every field that changes a number)
    assert report["git_hash"] and report["env"]["torch"] and report["config"]["batch_size"] == 4
    assert report["config"]["generator"]["style_conv"] == "factored"


def test_bench_rejects_bad_steps():
    proc = run_cli_here("bench", "ganseg", "--preset", "smoke", "--steps", "0", "--jsonl", "")
    assert proc.returncode == 2 and "--steps" in proc.stderr
