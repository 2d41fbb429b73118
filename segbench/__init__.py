"""segbench: benchmark and reproduction harness for unsupervised image segmenters.

``segbench`` is the one import name the package installs. Its subpackages are the checkout's
top-level folders, mapped with ``package-dir`` in pyproject.toml::

    segbench.benchmark  <- benchmark/   (CLI, runner, records, tables)
    segbench.methods    <- methods/     (method plugins)
    segbench.datasets   <- datasets/    (dataset loaders)
    segbench.protocols  <- protocols/   (evaluation protocols)

so a package named ``datasets`` (HuggingFace's) or ``benchmark`` elsewhere never collides
with ours. Plugin authors import ``segbench.api``.
"""
from __future__ import annotations

import os

__version__ = "0.1.0"
SUBPACKAGES = ("benchmark", "methods", "datasets", "protocols")

# Run from a checkout without installing (``python -m benchmark`` with the repo as cwd), the
# subpackages are siblings of this folder rather than inside it: look there too. An installed
# wheel has them inside (setuptools copies them per package-dir), so nothing is added.
_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if not os.path.isdir(os.path.join(os.path.dirname(os.path.abspath(__file__)), "benchmark")) and all(
        os.path.isfile(os.path.join(_root, sub, "__init__.py")) for sub in SUBPACKAGES):
    __path__.append(_root)  # type: ignore[name-defined]  # noqa: F821 (a package's __path__)
