import contextlib
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def run_cli(*args: str, cwd: Path = REPO, env: dict | None = None, timeout: int = 600):
    """Run ``python -m benchmark ...`` in a subprocess, as a user would."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run([sys.executable, "-m", "benchmark", *args], cwd=cwd, capture_output=True,
                          text=True, env=full_env, timeout=timeout)


def run_cli_here(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """``python -m benchmark ...`` in this process (no interpreter start, no torch import: ~3 s
    less per call on the 2-core machine). Same exit code and output as ``run_cli`` for commands
    that need no other environment; an exception ``main`` lets through propagates (a test
    failure, as a traceback would be in a subprocess)."""
    from segbench.benchmark.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), contextlib.chdir(cwd or REPO):
        try:
            code = main(list(args))
        except SystemExit as exc:  # argparse errors
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    return subprocess.CompletedProcess(["benchmark", *args], code, out.getvalue(), err.getvalue())


@pytest.fixture
def one_thread():
    """Tiny convolutions run far faster on one thread than on two contended ones."""
    from segbench.methods.common.runtime import torch_threads

    with torch_threads(1):
        yield


@pytest.fixture
def float64():
    """Float64 as the default dtype for the test (golden comparisons), restored after it."""
    import torch

    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


@pytest.fixture
def cli():
    return run_cli


def requires_shared_data(sub: str = ""):
    path = SHARED_DATA / sub
    return pytest.mark.skipif(not path.exists(), reason=f"real data not found at {path} (../shared/data)")
