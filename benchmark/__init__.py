"""The suite's library: streams, backbones, the runner, metrics, costs and results.

Nothing here parses arguments or exits; `run_suite.py` and `python -m reports` do that.
"""
