"""`python -m reports RESULTS_DIR [MORE_DIRS ...] [--out DIR]`: leaderboards, plots and report.html from stored
results, without rerunning anything. Several results folders are merged into one report (default --out: the first
folder). Result files that do not check out (unreadable, truncated, another schema version) are left out, each
named on stderr with why. Exit codes: 0 report written, 2 bad input (one line on stderr, nothing written)."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path


def main(argv: list[str], prog: str = "python -m reports") -> int:
    from benchmark.config import ComparisonConfig, make_config, require_folder  # light: no torch
    from benchmark.errors import EXIT_BAD_INPUT, EXIT_OK, ArgumentParser, UserInputError

    parser = ArgumentParser(prog=prog, description=__doc__)
    parser.add_argument("results_dirs", type=Path, nargs="+", help="folders holding runs/ (run_suite.py --out)")
    parser.add_argument("--out", type=Path, default=None, help="where the report goes (default: the first folder)")
    parser.add_argument("--reference", default=None,
                        help="strategy every other is tested against, per stream (default: the best mean avg_acc)")
    parser.add_argument("--level", type=float, default=0.05,
                        help="family-wise error rate of the Holm-corrected paired tests (default 0.05)")
    try:
        args = parser.parse_args(argv)
        missing = [d for d in args.results_dirs if not (d / "runs").is_dir()]
        if missing:
            raise UserInputError(f"{missing[0]} holds no runs/ folder; pass the --out folder of run_suite.py")
        out_dir = args.out or args.results_dirs[0]
        require_folder(out_dir, "--out", writable=True)
        comparison = make_config(ComparisonConfig, {"reference": args.reference, "level": args.level}, "comparison")
    except UserInputError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    warnings.filterwarnings("ignore", message="no QP solver found")  # see run_suite.py
    from reports.report import generate_report

    report = generate_report(args.results_dirs, out_dir, comparison)
    for skipped in report.skipped:  # unreadable, truncated or older-schema result files
        print(skipped.line(), file=sys.stderr)
    for note in report.notes:
        print(note, file=sys.stderr)
    print(report.markdown.read_text())
    print(f"leaderboard: {report.leaderboard}\nreport: {report.html}")
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
