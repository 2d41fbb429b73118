"""The command line as a user meets it: fast listing, one-line errors with exit code 2."""
import time

import pytest

from tests.conftest import run_cli, run_cli_here


def test_ls_methods_is_fast_and_does_not_import_torch():
    code = ("import runpy, sys, time; t=time.perf_counter(); sys.argv=['benchmark','ls','methods'];\n"
            "try:\n runpy.run_module('benchmark', run_name='__main__')\n"
            "except SystemExit as e:\n assert e.code == 0, e.code\n"
            "assert 'torch' not in sys.modules, 'ls imported torch';\n"
            "assert 'numpy' not in sys.modules, 'ls imported numpy';\n"
            "print('elapsed', time.perf_counter()-t)")
    import subprocess, sys
    from tests.conftest import REPO
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    wall = time.perf_counter() - t0
    assert out.returncode == 0, out.stderr
    assert "centre_prior" in out.stdout and "dummy" in out.stdout
    assert wall < 1.0, f"ls took {wall:.2f}s including interpreter start"


@pytest.mark.parametrize("kind,name", [("methods", "centre_prior"), ("protocols", "synthetic_parts"),
                                       ("datasets", "synthetic_parts")])
def test_ls_lists_each_registry(kind, name):
    out = run_cli_here("ls", kind)
    assert out.returncode == 0 and name in out.stdout


@pytest.mark.parametrize("args,fragment", [
    (["--method", "nosuch", "--protocol", "synthetic_parts"], "unknown method 'nosuch'"),
    (["--method", "centre_prio", "--protocol", "synthetic_parts"], "did you mean 'centre_prior'"),
    (["--method", "centre_prior", "--protocol", "synthetic_part"], "did you mean 'synthetic_parts'"),
    (["--method", "centre_prior", "--protocol", "synthetic_parts", "--set", "num_partz=3"],
     "did you mean num_parts"),
    (["--method", "centre_prior", "--protocol", "synthetic_parts", "--set", "num_parts=many"],
     "expected int"),
    (["--method", "centre_prior", "--protocol", "synthetic_parts", "--set", "radius_frac"],
     "expects key=value"),
    (["--method", "centre_prior", "--protocol", "synthetic_parts", "--preset", "quik"],
     "did you mean quick"),
    (["--method", "centre_prior", "--protocol", "synthetic_parts", "--option", "regression=ols"],
     "must be one of no_intercept"),
])
def test_user_mistakes_exit_2_with_one_line_and_no_traceback(args, fragment):
    out = run_cli_here("run", *args, "--dry-run")
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert fragment in out.stderr
    assert "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_dry_run_prints_resolved_config():
    out = run_cli_here("run", "--method", "centre_prior", "--protocol", "synthetic_parts", "--set",
                  "radius_frac=0.2", "--dry-run")
    assert out.returncode == 0, out.stderr
    assert '"radius_frac": 0.2' in out.stdout and '"num_parts": 6' in out.stdout


# ----- third-party plugins: a broken distribution never breaks ls or the other methods -----------
BROKEN_EPS = {"segbench.methods": {"malformed": "no_colon_here", "unimportable": "segbench_no_such_module:Thing"}}


@pytest.fixture
def broken_site(tmp_path):
    from tests.fixtures.plugin_dist import fake_distribution
    from tests.conftest import REPO

    site = fake_distribution(tmp_path / "site", "segbench-broken-plugins", BROKEN_EPS,
                             summary="Plugins that cannot load")
    return {"PYTHONPATH": f"{site}:{REPO}"}


def test_ls_lists_broken_plugins_with_a_note_without_importing_torch(broken_site):
    import os, subprocess, sys
    from tests.conftest import REPO
    code = ("import runpy, sys; sys.argv=['benchmark','ls','methods'];\n"
            "try:\n runpy.run_module('benchmark', run_name='__main__')\n"
            "except SystemExit as e:\n assert e.code == 0, e.code\n"
            "assert 'torch' not in sys.modules, 'ls imported torch'")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60,
                         env={**os.environ, **broken_site})
    assert out.returncode == 0, out.stderr
    lines = {line.split()[0]: line for line in out.stdout.splitlines()}
    assert "centre_prior" in lines and "ganseg" in lines
    assert "(broken: entry point value 'no_colon_here' is not 'module:Object')" in lines["malformed"]
    assert "[segbench-broken-plugins]" in lines["malformed"]
    assert "Plugins that cannot load  [segbench-broken-plugins]" in lines["unimportable"]  # summary from METADATA


@pytest.mark.parametrize("command,name,message", [
    ("run", "unimportable", "error: method 'unimportable' from distribution 'segbench-broken-plugins' could not be "
                            "imported: ModuleNotFoundError: No module named 'segbench_no_such_module'"),
    ("run", "malformed", "error: method 'malformed' from distribution 'segbench-broken-plugins' is broken: entry "
                         "point value 'no_colon_here' is not 'module:Object'"),
    ("check-plugin", "unimportable", "error: method 'unimportable' from distribution 'segbench-broken-plugins' could "
                                     "not be imported: ModuleNotFoundError: No module named 'segbench_no_such_module'"),
    ("check-plugin", "malformed", "is broken: entry point value 'no_colon_here' is not 'module:Object'"),
])
def test_a_broken_plugin_fails_with_one_line_and_exit_2(broken_site, command, name, message):
    args = ["run", "--method", name, "--protocol", "synthetic_parts", "--dry-run"] if command == "run" \
        else ["check-plugin", name]
    out = run_cli(*args, env=broken_site)
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert message in out.stderr and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_other_methods_still_run_beside_a_broken_plugin(broken_site):
    out = run_cli("run", "--method", "centre_prior", "--protocol", "synthetic_parts", "--dry-run", env=broken_site)
    assert out.returncode == 0, out.stderr
    assert '"num_parts": 6' in out.stdout
