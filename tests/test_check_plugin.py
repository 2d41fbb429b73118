"""``python -m benchmark check-plugin``: the shipped conformance suite as a user runs it.

The CLI runs only for the cheap methods (the built-in baselines, the example plugin and the two
deliberately broken plugins); ganseg and latent_direction go through the same library in
tests/test_conformance.py, with fits shared across checks.
"""
import dataclasses
import functools
from pathlib import Path

import pytest
import torch

from segbench.benchmark.check_plugin import (CHECKS, FAIL, PASS, SKIP, PluginHarness, find_label_path, run_check,
                                             run_checks)
from segbench.datasets.base import Dataset, Split
from segbench.methods.base import PARTS, Method
from tests.conftest import REPO, run_cli, run_cli_here
from tests.fixtures.plugin_dist import fake_distribution

EXAMPLE = REPO / "examples" / "segbench-example-plugin"
BROKEN = REPO / "tests" / "fixtures" / "broken_plugins"


def _lines(out, status):
    return [line for line in out.stdout.splitlines() if line.startswith(status + " ")]


def _assert_all_pass(out, skipped=()):
    assert out.returncode == 0, (out.stdout, out.stderr)
    assert not _lines(out, FAIL), out.stdout
    assert {line.split()[1] for line in _lines(out, SKIP)} == set(skipped), out.stdout
    assert len(_lines(out, PASS)) + len(skipped) == len(CHECKS), out.stdout


@pytest.mark.parametrize("name,skipped", [("centre_prior", ("samples",)), ("dummy", ())])
def test_builtin_baselines_pass_check_plugin(name, skipped):
    out = run_cli_here("check-plugin", name, "--threads", "1")
    _assert_all_pass(out, skipped)
    assert "protocol    synthetic_parts v1" in out.stdout
    if name == "centre_prior":  # declares deterministic = True: seeds must agree
        assert "deterministic method" in out.stdout


def test_example_plugin_passes_when_registered_by_entry_point(tmp_path):
    site = fake_distribution(tmp_path / "site", "segbench-example-plugin",
                             {"segbench.methods": {"example_colour": "segbench_example_plugin:ColourClusters"}},
                             summary="Example segbench method plugin: k-means on pixel colours")
    env = {"PYTHONPATH": f"{site}:{EXAMPLE}:{REPO}"}
    listed = run_cli("ls", "methods", cwd=EXAMPLE, env=env)
    assert listed.returncode == 0, listed.stderr
    assert any(line.startswith("example_colour") and "k-means on pixel colours" in line
               and "[segbench-example-plugin]" in line for line in listed.stdout.splitlines()), listed.stdout
    out = run_cli("check-plugin", "example_colour", "--threads", "1", cwd=EXAMPLE, env=env)
    _assert_all_pass(out, ("samples",))
    assert "example_colour (segbench_example_plugin:ColourClusters)" in out.stdout


def test_example_plugin_declares_its_entry_point():
    import tomllib

    project = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())["project"]
    assert project["entry-points"]["segbench.methods"] == {"example_colour": "segbench_example_plugin:ColourClusters"}


def test_readme_shows_the_example_plugin_as_it_is():
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## Write a method"):]
    code = section[section.index("```python\n") + len("```python\n"):]
    assert code[:code.index("```")] == (EXAMPLE / "segbench_example_plugin.py").read_text()


@pytest.mark.parametrize("target,check,fragment", [
    ("broken_batch:BatchStandardised", "batch", "predicts differently from its images one at a time"),
    ("broken_seed:FixedSeedPrototypes", "seed", "seeds 0 and 1 give the same predictions"),
])
def test_broken_plugins_fail_one_check_with_one_line(target, check, fragment):
    out = run_cli("check-plugin", target, "--threads", "1", env={"PYTHONPATH": f"{BROKEN}:{REPO}"})
    assert out.returncode == 2, (out.stdout, out.stderr)
    failed = _lines(out, FAIL)
    assert len(failed) == 1 and failed[0].split()[1] == check and fragment in failed[0], out.stdout
    assert "Traceback" not in out.stdout + out.stderr
    assert f"1 of {len(CHECKS)} checks failed: {check}" in out.stdout


@pytest.mark.parametrize("args,fragment", [
    (["nosuch"], "unknown method 'nosuch'"),
    (["centre_prio"], "did you mean 'centre_prior'"),
    (["no_such_module_xyz:Thing"], "could not be imported: ModuleNotFoundError: No module named 'no_such_module_xyz'"),
    (["collections:OrderedDict"], "not a subclass of segbench.api.Method"),
    (["centre_prior", "--set", "num_partz=3"], "did you mean num_parts"),
    (["centre_prior", "--device", "cuda:99"], "--device cuda:99"),
])
def test_check_plugin_user_mistakes_exit_2_with_one_line(args, fragment):
    out = run_cli_here("check-plugin", *args)
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert fragment in out.stderr and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


# ----- the library: checks that catch what they should ------------------------------------------
@dataclasses.dataclass(frozen=True)
class _Config:
    num_parts: int = 2


class _Uniform(Method):
    """Uniform probabilities: valid, batch invariant, no randomness."""

    Config = _Config
    PRESETS = {"paper": {}, "quick": {}, "smoke": {}}
    produces = frozenset({PARTS})
    deterministic = True

    def fit(self, train_images, ctx):
        pass

    def _predict(self, images):
        b, _, h, w = images.shape
        return torch.full((b, self.num_parts + 1, h, w), 1.0 / (self.num_parts + 1))


def _results(cls, tmp_path, checks=CHECKS):
    return {r.check: r for r in run_checks(PluginHarness(cls, cls.__name__, tmp_path, limit=4), checks)}


def test_a_clean_minimal_method_passes(tmp_path):
    results = _results(_Uniform, tmp_path)
    assert all(r.status == PASS for c, r in results.items() if c != "samples"), [r.line() for r in results.values()]
    assert results["samples"].status == SKIP


def test_config_check_catches_a_missing_preset_and_a_mutable_config(tmp_path):
    class NoSmoke(_Uniform):
        PRESETS = {"paper": {}, "quick": {}}

    @dataclasses.dataclass
    class Mutable:
        num_parts: int = 2

    class MutableConfig(_Uniform):
        Config = Mutable

    r = _results(NoSmoke, tmp_path / "a", ("config", "fit", "predictions"))
    assert r["config"].status == FAIL and "lacks smoke" in r["config"].detail
    assert r["fit"].status == FAIL and r["predictions"].status == SKIP and "fit failed" in r["predictions"].detail
    r = run_check(PluginHarness(MutableConfig, "m", tmp_path / "b", limit=4), "config")
    assert r.status == FAIL and "frozen" in r.detail


def test_config_check_catches_presets_that_break_fixed_num_parts(tmp_path):
    @dataclasses.dataclass(frozen=True)
    class OnePart:
        num_parts: int = 1

    class Fixed(_Uniform):
        Config = OnePart
        fixed_num_parts = 1
        PRESETS = {"paper": {}, "quick": {}, "smoke": {"num_parts": 3}}

    r = run_check(PluginHarness(Fixed, "f", tmp_path, limit=4), "config")
    assert r.status == FAIL and "fixed_num_parts=1 but num_parts is {'smoke': 3}" in r.detail


def test_seed_check_catches_a_false_deterministic_claim(tmp_path):
    class Seeded(_Uniform):
        def fit(self, train_images, ctx):
            self.bias = torch.rand((), generator=torch.Generator().manual_seed(ctx.seed))

        def _predict(self, images):
            p = super()._predict(images).clone()
            p[:, 0] += 0.1 * self.bias
            return p / p.sum(1, keepdim=True)

    r = run_check(PluginHarness(Seeded, "s", tmp_path, limit=4), "seed")
    assert r.status == FAIL and "deterministic = True" in r.detail


def test_save_load_check_catches_state_left_out_of_state_dict(tmp_path):
    class Forgetful(_Uniform):
        deterministic = False

        def __init__(self, config=None):
            super().__init__(config)
            self.bias = torch.zeros(())

        def fit(self, train_images, ctx):
            self.bias = torch.rand((), generator=torch.Generator().manual_seed(ctx.seed + 1))

        def _predict(self, images):
            p = super()._predict(images).clone()
            p[:, 0] += self.bias
            return p / p.sum(1, keepdim=True)

    r = run_check(PluginHarness(Forgetful, "f", tmp_path, limit=4), "save_load")
    assert r.status == FAIL and "after save/load predictions differ" in r.detail


# ----- the label walk ------------------------------------------------------------------------
class _Split(Split):
    def image(self, index):
        return None

    def annotation(self, index):
        return {}

    def fit_images(self):
        return None


class _Dataset(Dataset):
    SPLITS = {}

    def _split(self, name):
        return None


class _Holder:
    def __init__(self, value):
        self.value = value


class _Slotted:
    __slots__ = ("inner", "unset")

    def __init__(self, inner):
        self.inner = inner


class _Annotated:
    def annotation(self, index):
        return {}


def _closure_over(obj):
    def load(index):
        return obj
    return load


@pytest.mark.parametrize("make,path", [
    (lambda s: _Holder(s), "root.value reaches a _Split (a Split)"),
    (lambda s: _Holder(_Holder([{"k": (s,)}])), "root.value.value[0]['k'][0] reaches"),
    (lambda s: _Holder(_closure_over(_Holder(s))), "root.value.<closure obj>.value reaches"),
    (lambda s: _Holder(functools.partial(print, sep=_Slotted(s))), "root.value.keywords['sep'].inner reaches"),
    (lambda s: _Holder(functools.partial(print, _Holder(s).__init__)), "root.value.args[0].__self__.value reaches"),
    (lambda s: _Holder(_Dataset()), "root.value reaches a _Dataset (a Dataset)"),
    (lambda s: _Holder({"x": _Annotated()}), "reaches a _Annotated with an annotation() method"),
])
def test_label_walk_finds_labels_however_deep_they_hide(make, path):
    found, _ = find_label_path(make(_Split("train", 3)), "root")
    assert found is not None and path in found, found


_GLOBAL_SPLITS = {}


def _load_through_a_global(index):
    return _GLOBAL_SPLITS["train"].image(index)


def test_label_walk_follows_the_globals_a_loader_names(monkeypatch):
    assert find_label_path(_Holder(_load_through_a_global), "root")[0] is None
    monkeypatch.setitem(_GLOBAL_SPLITS, "train", _Split("train", 2))
    found, _ = find_label_path(_Holder(_load_through_a_global), "root")
    assert found == "root.value.__globals__['_GLOBAL_SPLITS']['train'] reaches a _Split (a Split)"


def test_label_walk_survives_cycles_and_stops_at_its_depth_cap():
    a = _Holder(None)
    a.value = [a, {"self": a}, torch.zeros(2), "text", 3]
    found, visited = find_label_path(a, "root")
    assert found is None and visited <= 4
    deep = _Split("train", 1)
    for _ in range(30):
        deep = _Holder(deep)
    assert find_label_path(deep, "root", max_depth=10)[0] is None
    assert find_label_path(deep, "root", max_depth=40)[0] is not None


def test_no_labels_check_fails_on_fit_images_that_reach_a_split(tmp_path):
    class Leaky(PluginHarness):
        @property
        def fit_images(self):
            return _Holder(_Split("train", 2))

    r = run_check(Leaky(_Uniform, "u", Path(tmp_path), limit=4), "no_labels")
    assert r.status == FAIL and "reaches a _Split (a Split)" in r.detail
