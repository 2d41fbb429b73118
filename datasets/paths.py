"""Where real data lives: ``--data-root``, then ``$SEGBENCH_DATA``, then ``../shared/data``
beside the checkout. Synthetic datasets ignore it."""
from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "SEGBENCH_DATA"
CACHE_ENV_VAR = "SEGBENCH_CACHE"
CHECKOUT_SIBLING = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def resolve_data_root(cli_value: str | None, dataset: str | None = None) -> Path | None:
    if cli_value:
        return Path(cli_value).expanduser()
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR]).expanduser()
    if CHECKOUT_SIBLING.is_dir():
        return CHECKOUT_SIBLING
    return None


def cache_dir() -> Path:
    """Derived, re-computable files (FID statistics): ``$SEGBENCH_CACHE`` or ``~/.cache/segbench``.
    Kept out of the data root, which may be read-only (``../shared/data`` is)."""
    return Path(os.environ.get(CACHE_ENV_VAR) or Path.home() / ".cache" / "segbench").expanduser()
