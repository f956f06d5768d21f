"""`python -m cl_bench ...`: the same as the `cl-bench` command."""

import sys

from cl_bench.cli import main

raise SystemExit(main(sys.argv[1:]))
