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


@pytest.fixture
def one_thread():
    """Tiny convolutions run far faster on one thread than on two contended ones."""
    from segbench.methods.common.runtime import torch_threads

    with torch_threads(1):
        yield


@pytest.fixture
def cli():
    return run_cli


def requires_shared_data(sub: str = ""):
    path = SHARED_DATA / sub
    return pytest.mark.skipif(not path.exists(), reason=f"real data not found at {path} (../shared/data)")
