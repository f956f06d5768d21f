"""Run a continual-learning suite: every (backbone, stream, strategy, seed) of a YAML config.

    python run_suite.py [--config configs/mini.yaml] [--out DIR] [--seeds 0 1 2] [--strategies a b]
                        [--streams x y] [--quiet]

Results land in DIR/runs/<run_id>/result.json (default DIR: results/<config name>); finished runs are skipped on
a re-run; the leaderboard is rebuilt at the end. Bad input exits with code 2 and one line on stderr.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "mini.yaml"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="YAML suite (default: configs/mini.yaml)")
    parser.add_argument("--out", type=Path, default=None, help="results folder (default: results/<config name>)")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="override the config's seeds")
    parser.add_argument("--strategies", nargs="+", default=None, help="run only these strategies")
    parser.add_argument("--streams", nargs="+", default=None, help="run only these streams")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser.parse_args(argv)


def summary_table(table):
    """The leaderboard's headline columns (means over seeds) for the terminal; the CSV has everything."""
    columns = {"stream": "stream", "strategy": "strategy", "avg_acc_mean": "avg_acc", "avg_inc_acc_mean": "avg_inc_acc",
               "bwt_mean": "bwt", "forgetting_mean": "forgetting", "retained_pretrain_last_mean": "retained_pretrain",
               "pretrain_drop_mean": "pretrain_drop", "params_trainable": "trainable", "wall_time_s": "time_s",
               "n_seeds": "seeds"}
    return table[list(columns)].rename(columns=columns)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    # Avalanche imports qpsolvers, which warns at import that no QP solver is installed (only GEM-like methods need one).
    warnings.filterwarnings("ignore", message="no QP solver found")
    # Imported after argument parsing: `--help` answers without loading torch.
    import strategies  # noqa: F401  (registers the built-in strategies)
    from benchmark.config import load_suite, select
    from benchmark.errors import UserInputError
    from benchmark.runtime import Runtime
    from benchmark.suite import run_suite
    from reports.leaderboard import LEADERBOARD_FILE, write_leaderboard

    try:
        config = select(load_suite(args.config), streams=args.streams, strategies=args.strategies, seeds=args.seeds)
        out_dir = args.out or Path("results") / config.name
        runtime = Runtime.resolve(config.device, config.precision, progress=not args.quiet)
        outcome = run_suite(config, out_dir, runtime)
    except UserInputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    table = write_leaderboard(out_dir)
    print(summary_table(table).to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    print(f"\n{len(outcome.ran)} runs done, {len(outcome.skipped)} already finished, {len(outcome.failed)} failed")
    for run_id in outcome.failed:
        print(f"failed: {out_dir / 'runs' / run_id / 'result.json'}")
    print(f"results: {out_dir}/runs/  leaderboard: {out_dir / LEADERBOARD_FILE}")
    return 1 if outcome.failed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
