import pytest

from segbench.benchmark.registry import Registry, UnknownNameError


def test_lazy_target_is_imported_only_on_get():
    reg = Registry("thing")
    reg.add("od", "collections:OrderedDict")
    assert reg.names() == ["od"]
    import collections
    assert reg.get("od") is collections.OrderedDict


def test_unknown_name_suggests_close_matches():
    reg = Registry("method")
    reg.add("centre_prior", "collections:OrderedDict")
    reg.add("dummy", "collections:Counter")
    with pytest.raises(UnknownNameError, match="did you mean 'centre_prior'"):
        reg.entry("center_prior")
    with pytest.raises(UnknownNameError, match="known: centre_prior, dummy"):
        reg.entry("zzzz")


def test_target_must_name_module_and_object():
    with pytest.raises(ValueError):
        Registry("x").add("a", "no_colon")


def test_conflicting_registration_is_rejected():
    reg = Registry("x")
    reg.add("a", "m:A")
    reg.add("a", "m:A")  # same target again is fine
    with pytest.raises(ValueError, match="already registered"):
        reg.add("a", "m:B")


def test_entry_points_extend_the_registry(monkeypatch):
    class FakeEntryPoint:
        name, value, dist = "plugin_method", "collections:deque", None

    def fake_entry_points(group):
        assert group == "segbench.methods"
        return [FakeEntryPoint()]

    import importlib.metadata
    monkeypatch.setattr(importlib.metadata, "entry_points", fake_entry_points)
    reg = Registry("method", entry_point_group="segbench.methods")
    reg.add("builtin", "collections:Counter")
    assert reg.names() == ["builtin", "plugin_method"]
    import collections
    assert reg.get("plugin_method") is collections.deque
    assert reg.entry("plugin_method").origin == "entry-point"
