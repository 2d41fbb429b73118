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


# ----- third-party entry points: a broken one never breaks the others --------------------------
class _FakeDist:
    def __init__(self, name, summary=""):
        self.name = name
        self.metadata = {"Summary": summary} if summary else {}


def _entry_point(name, value, dist=None):
    return type("FakeEntryPoint", (), {"name": name, "value": value, "dist": dist})()


def _registry_with(monkeypatch, *eps):
    import importlib.metadata
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group: list(eps))
    reg = Registry("method", entry_point_group="segbench.methods")
    reg.add("builtin", "collections:Counter", "a built-in")
    return reg


def test_malformed_entry_point_is_listed_as_broken_and_others_still_load(monkeypatch):
    from segbench.benchmark.registry import PluginLoadError

    dist = _FakeDist("bad-dist", "bad plugins")
    reg = _registry_with(monkeypatch, _entry_point("nocolon", "just_a_module", dist),
                         _entry_point("good", "collections:deque", _FakeDist("good-dist", "Good   plugin\n summary")))
    assert reg.names() == ["builtin", "good", "nocolon"]
    broken = reg.entry("nocolon")
    assert broken.broken and broken.origin == "bad-dist" and "'just_a_module' is not 'module:Object'" in broken.error
    assert reg.entry("good").summary == "Good plugin summary"  # from the metadata, nothing imported
    import collections
    assert reg.get("good") is collections.deque and reg.get("builtin") is collections.Counter
    with pytest.raises(PluginLoadError, match="method 'nocolon' from distribution 'bad-dist' is broken: entry point "
                                              "value 'just_a_module' is not 'module:Object'"):
        reg.get("nocolon")


def test_unimportable_entry_point_fails_with_one_line_naming_its_distribution(monkeypatch, tmp_path):
    from segbench.benchmark.errors import UserError
    from segbench.benchmark.registry import PluginLoadError

    (tmp_path / "segbench_raises_on_import.py").write_text("raise RuntimeError('boom\\nsecond line')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    reg = _registry_with(monkeypatch, _entry_point("missing", "segbench_no_such_module_x:Thing", _FakeDist("dist-y")),
                         _entry_point("raises", "segbench_raises_on_import:Thing", _FakeDist("dist-z")),
                         _entry_point("noattr", "collections:NoSuchThing", None))
    with pytest.raises(PluginLoadError) as info:
        reg.get("missing")
    assert str(info.value) == ("method 'missing' from distribution 'dist-y' could not be imported: "
                               "ModuleNotFoundError: No module named 'segbench_no_such_module_x'")
    assert isinstance(info.value, UserError)  # the CLI prints it as one line, exit 2
    with pytest.raises(PluginLoadError, match=r"from distribution 'dist-z' could not be imported: RuntimeError: boom$"):
        reg.get("raises")
    with pytest.raises(PluginLoadError, match="'noattr' from distribution 'entry-point' could not be imported: "
                                              "AttributeError"):
        reg.get("noattr")
    assert reg.get("builtin").__name__ == "Counter"


def test_a_builtin_that_fails_to_import_is_a_bug_and_raises_as_it_is():
    reg = Registry("method")
    reg.add("mine", "segbench_no_such_builtin_module:Thing")
    with pytest.raises(ModuleNotFoundError):
        reg.get("mine")


def test_unreadable_entry_points_leave_the_builtins(monkeypatch):
    import importlib.metadata

    def broken(group):
        raise OSError("unreadable site-packages")

    monkeypatch.setattr(importlib.metadata, "entry_points", broken)
    reg = Registry("method", entry_point_group="segbench.methods")
    reg.add("builtin", "collections:Counter")
    assert reg.names() == ["builtin"] and "unreadable site-packages" in reg.scan_error


def test_load_target_turns_any_failure_into_one_line():
    from segbench.benchmark.registry import PluginLoadError, load_target

    import collections
    assert load_target("collections:OrderedDict") is collections.OrderedDict
    with pytest.raises(PluginLoadError, match="method target value 'nocolon' is not 'module:Object'"):
        load_target("nocolon", kind="method")
    with pytest.raises(PluginLoadError, match="could not be imported: ModuleNotFoundError"):
        load_target("segbench_no_such_module_q:X", kind="method")
