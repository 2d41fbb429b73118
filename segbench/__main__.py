"""``python -m segbench ...`` (the same CLI as ``python -m benchmark`` from a checkout)."""
import sys

from segbench.benchmark.cli import main

sys.exit(main())
