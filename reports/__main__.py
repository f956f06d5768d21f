"""`python -m reports RESULTS_DIR`: rebuild the leaderboard from stored results, without rerunning anything."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from reports.leaderboard import LEADERBOARD_FILE, write_leaderboard


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m reports", description=__doc__)
    parser.add_argument("results_dir", type=Path)
    args = parser.parse_args(argv)
    if not (args.results_dir / "runs").is_dir():
        print(f"error: {args.results_dir} holds no runs/ folder; pass the --out folder of run_suite.py",
              file=sys.stderr)
        return 2
    table = write_leaderboard(args.results_dir)
    print(table.to_string(index=False))
    print(f"\nleaderboard: {args.results_dir / LEADERBOARD_FILE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
