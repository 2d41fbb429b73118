import sys

from segbench.benchmark.cli import main

sys.exit(main())
