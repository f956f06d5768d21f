"""`cl-bench run | dry-run | report | manifest ...`: the console command `pip install .` installs ([project.scripts]).

Each sub-command hands its arguments to the existing entry point, so the options, defaults, outputs and exit codes
are those of the scripts, parsed by the same code:

    cl-bench run [run_suite.py options]        = python run_suite.py [options]
    cl-bench dry-run [run_suite.py options]    = python run_suite.py --dry-run [options]
    cl-bench report RESULTS_DIR ... [--out]    = python -m reports RESULTS_DIR ... [--out]
    cl-bench manifest FOLDER [--out FILE]      = python -m benchmark.datasets.class_folders FOLDER [--out FILE]
"""

from __future__ import annotations

import sys
from typing import Callable, Optional

USAGE = ("usage: cl-bench {run,dry-run,report,manifest} [options]   (cl-bench <command> --help: its options)\n"
         "  run       run a suite (as run_suite.py)\n"
         "  dry-run   check a suite and size its runs without training (as run_suite.py --dry-run)\n"
         "  report    leaderboards, plots and report.html from stored results (as python -m reports)\n"
         "  manifest  write the split manifest of a benchmark folder (train/ and test/ class folders)")


def _run(args: list[str]) -> int:
    import run_suite

    return run_suite.main(args)


def _dry_run(args: list[str]) -> int:
    import run_suite

    return run_suite.main([*args, "--dry-run"])


def _report(args: list[str]) -> int:
    from reports.__main__ import main as reports_main

    return reports_main(args)


def _manifest(args: list[str]) -> int:
    from benchmark.datasets.class_folders import main as manifest_main

    return manifest_main(args)


COMMANDS: dict[str, Callable[[list[str]], int]] = {"run": _run, "dry-run": _dry_run, "report": _report,
                                                   "manifest": _manifest}


def main(argv: Optional[list[str]] = None) -> int:
    """Dispatch to a sub-command; no or an unknown sub-command prints the usage (exit 2, as argparse does)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] in (["-h"], ["--help"]):
        print(USAGE)
        return 0
    if not argv or argv[0] not in COMMANDS:
        given = f"unknown command {argv[0]!r}; " if argv else ""
        print(f"error: {given}choose one of {', '.join(COMMANDS)}\n{USAGE}", file=sys.stderr)
        return 2
    return COMMANDS[argv[0]](argv[1:])
