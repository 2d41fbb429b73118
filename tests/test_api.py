"""The plugin API is importable on its own and pulls in nothing above it."""
import subprocess
import sys

from tests.conftest import REPO

ABOVE = ("segbench.benchmark.runner", "segbench.benchmark.cli", "segbench.benchmark.tables",
         "segbench.benchmark.records", "segbench.benchmark.figures")


def test_the_api_imports_nothing_above_it():
    code = ("import sys, segbench.api as api\n"
            f"bad = [m for m in {ABOVE!r} if m in sys.modules]\n"
            "assert not bad, bad\n"
            "assert all(hasattr(api, n) for n in api.__all__)\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
