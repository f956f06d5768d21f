"""`python -m reports RESULTS_DIR [MORE_DIRS ...] [--out DIR]`: leaderboards, plots and report.html from stored
results, without rerunning anything. Several results folders are merged into one report (default --out: the first
folder)."""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m reports", description=__doc__)
    parser.add_argument("results_dirs", type=Path, nargs="+", help="folders holding runs/ (run_suite.py --out)")
    parser.add_argument("--out", type=Path, default=None, help="where the report goes (default: the first folder)")
    args = parser.parse_args(argv)
    missing = [d for d in args.results_dirs if not (d / "runs").is_dir()]
    if missing:
        print(f"error: {missing[0]} holds no runs/ folder; pass the --out folder of run_suite.py", file=sys.stderr)
        return 2
    warnings.filterwarnings("ignore", message="no QP solver found")  # see run_suite.py
    from reports.report import generate_report

    report = generate_report(args.results_dirs, args.out or args.results_dirs[0])
    print(report.markdown.read_text())
    print(f"leaderboard: {report.leaderboard}\nreport: {report.html}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
