"""Where real data lives: ``--data-root``, then ``$SEGBENCH_DATA``, then ``../shared/data``
beside the checkout. Synthetic datasets ignore it."""
from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "SEGBENCH_DATA"
CHECKOUT_SIBLING = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def resolve_data_root(cli_value: str | None, dataset: str | None = None) -> Path | None:
    if cli_value:
        return Path(cli_value).expanduser()
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR]).expanduser()
    if CHECKOUT_SIBLING.is_dir():
        return CHECKOUT_SIBLING
    return None
