"""`cl-bench run | dry-run | report | list | manifest`: the console command `pip install .` installs
([project.scripts]).

Each sub-command hands its arguments to the existing entry point, so the options, defaults, outputs and exit codes
are those of the scripts, parsed by the same code (their help and errors name the sub-command):

    cl-bench run [run_suite.py options]        = python run_suite.py [options]
    cl-bench dry-run [run_suite.py options]    = python run_suite.py --dry-run [options]
    cl-bench report RESULTS_DIR ... [--out]    = python -m reports RESULTS_DIR ... [--out]
    cl-bench list                              the registered strategies (with presets), streams, backbones, input
                                               pipelines, retention protocols, tracking sinks and shipped configs
    cl-bench manifest FOLDER [--out FILE]      = python -m benchmark.datasets.class_folders FOLDER [--out FILE]
    cl-bench --version
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable, Optional

USAGE = ("usage: cl-bench {run,dry-run,report,list,manifest} [options] | cl-bench --version   (cl-bench <command> "
         "--help lists a command's options)\n"
         "  run       run a suite (as run_suite.py)\n"
         "  dry-run   check a suite and size its runs without training (as run_suite.py --dry-run)\n"
         "  report    leaderboards, plots and report.html from stored results (as python -m reports)\n"
         "  list      what can be named in a suite file: strategies, streams, backbones, pipelines, configs\n"
         "  manifest  write the split manifest of a benchmark folder (train/ and test/ class folders)")


def _run(args: list[str]) -> int:
    import run_suite

    return run_suite.main(args, prog="cl-bench run")


def _dry_run(args: list[str]) -> int:
    import run_suite

    return run_suite.main([*args, "--dry-run"], prog="cl-bench dry-run")


def _report(args: list[str]) -> int:
    from reports.__main__ import main as reports_main

    return reports_main(args, prog="cl-bench report")


def _list(args: list[str]) -> int:
    if args[:1] in (["-h"], ["--help"]):
        print("usage: cl-bench list   (no options: prints every name a suite file can use)")
        return 0
    if args:
        print(f"error: cl-bench list takes no arguments, got {args[0]!r}; see cl-bench list --help", file=sys.stderr)
        return 2
    print(listing())
    return 0


def listing() -> str:
    """Every registered name a suite file can use, by kind, with each strategy's presets."""
    import warnings

    warnings.filterwarnings("ignore", message="no QP solver found")
    import run_suite
    import strategies  # noqa: F401  (registers the built-in strategies)
    from benchmark.backbones import BACKBONES
    from benchmark.recipe import INPUTS
    from benchmark.retention import PROTOCOLS
    from benchmark.streams import STREAMS
    from benchmark.tracking import SINKS
    from strategies.base import STRATEGIES

    def presets(name: str) -> str:
        strategy = STRATEGIES.get(name)
        names = list(getattr(strategy.Config, "PRESETS", None) or
                     getattr(sys.modules.get(strategy.__module__), "PRESETS", None) or {})
        return f" (presets: {', '.join(names)})" if names else ""

    configs = sorted(p.name for p in run_suite.default_config().parent.glob("*.yaml"))
    sections = [("strategies", [n + presets(n) for n in STRATEGIES.names()]), ("streams", STREAMS.names()),
                ("backbones", [BACKBONES.valid()]), ("input pipelines (a strategy's `input:`)", INPUTS.names()),
                ("retention protocols", PROTOCOLS.names()), ("tracking sinks", SINKS.names()),
                (f"configs ({run_suite.default_config().parent})", configs)]
    return "\n".join(f"{title}:\n" + "\n".join(f"  {item}" for item in items) for title, items in sections)


def version() -> str:
    from benchmark.results import package_version

    installed = package_version()  # None: run from a source tree that was never installed
    if installed is None:
        return "cl-bench (not installed; source tree " + str(Path(__file__).resolve().parent.parent) + ")"
    return f"cl-bench {installed}"


def _manifest(args: list[str]) -> int:
    from benchmark.datasets.class_folders import main as manifest_main

    return manifest_main(args)


COMMANDS: dict[str, Callable[[list[str]], int]] = {"run": _run, "dry-run": _dry_run, "report": _report, "list": _list,
                                                   "manifest": _manifest}


def main(argv: Optional[list[str]] = None) -> int:
    """Dispatch to a sub-command; no or an unknown sub-command prints the usage (exit 2, as argparse does)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] in (["-h"], ["--help"]):
        print(USAGE)
        return 0
    if argv[:1] in (["-V"], ["--version"]):
        print(version())
        return 0
    if not argv or argv[0] not in COMMANDS:
        given = f"unknown command {argv[0]!r}; " if argv else ""
        print(f"error: {given}choose one of {', '.join(COMMANDS)}\n{USAGE}", file=sys.stderr)
        return 2
    return COMMANDS[argv[0]](argv[1:])
