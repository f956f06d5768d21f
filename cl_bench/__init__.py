"""cl-vit-bench for notebooks and the shell: `load_results`, `run` and `report` (api.py), and the `cl-bench` command
(cli.py) that `pip install .` puts on the path."""

from cl_bench.api import load_results, report, run

__all__ = ["load_results", "report", "run"]
