"""Run a continual-learning suite: every (backbone, stream, strategy, seed) of a YAML config.

    python run_suite.py [--config configs/mini.yaml] [--out DIR] [--seeds 0 1 2] [--strategies a b]
                        [--streams x y] [--quiet] [--keep-checkpoints] [--dry-run]

Results land in DIR/runs/<run_id>/result.json (default DIR: results/<config name>); finished runs are skipped on
a re-run; the leaderboard is rebuilt at the end. Exit codes: 0 all runs finished, 1 some run failed, 2 bad input
(one line on stderr, nothing written; also a results folder that cannot take its files: a full disk, a planted link),
130 interrupted by Ctrl-C, 143 by SIGTERM (workers stopped, finished runs kept; rerun to resume); see
benchmark/errors.py and docs/safety.md.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "mini.yaml"


def parse_args(argv: list[str]) -> argparse.Namespace:
    from benchmark.errors import ArgumentParser

    parser = ArgumentParser(prog="run_suite.py", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="YAML suite (default: configs/mini.yaml)")
    parser.add_argument("--out", type=Path, default=None, help="results folder (default: results/<config name>)")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="override the config's seeds")
    parser.add_argument("--strategies", nargs="+", default=None, help="run only these strategies")
    parser.add_argument("--streams", nargs="+", default=None, help="run only these streams")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--executor", default=None, help="local (default), ray or submitit")
    parser.add_argument("--workers", type=int, default=None, help="local executor: runs at once in worker processes")
    parser.add_argument("--ray-address", default=None, help="ray executor: 'auto' joins a running cluster")
    parser.add_argument("--submitit-cluster", default=None, help="submitit executor: slurm, local or debug")
    parser.add_argument("--dry-run", action="store_true",
                        help="check the config, data and weights and print the planned runs' sizes; train nothing")
    parser.add_argument("--keep-checkpoints", action="store_true",
                        help="keep each run's per-task checkpoint after it finishes (default: removed)")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    from benchmark.errors import EXIT_BAD_INPUT, UserInputError, interrupt_exit, terminate_as_interrupt  # no torch

    try:
        with terminate_as_interrupt():
            return run(parse_args(argv))
    except UserInputError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt as error:  # Ctrl-C or SIGTERM: the suite has stopped its workers and released the lock
        print("interrupted: finished runs and per-task checkpoints are kept; run the same command again to resume",
              file=sys.stderr)
        return interrupt_exit(error)


def run(args: argparse.Namespace) -> int:
    # Avalanche imports qpsolvers, which warns at import that no QP solver is installed (only GEM-like methods need one).
    warnings.filterwarnings("ignore", message="no QP solver found")
    # Imported after argument parsing: `--help` answers without loading torch.
    import strategies  # noqa: F401  (registers the built-in strategies)
    from benchmark.config import load_suite, require_folder, select
    from benchmark.errors import EXIT_OK, EXIT_RUNS_FAILED
    from benchmark.runtime import Runtime
    from benchmark.safe_io import check_name
    from benchmark.suite import run_suite
    from reports.report import generate_report

    overrides = {"name": args.executor, "workers": args.workers, "ray_address": args.ray_address,
                 "submitit_cluster": args.submitit_cluster}
    config = select(load_suite(args.config), streams=args.streams, strategies=args.strategies, seeds=args.seeds,
                    executor={k: v for k, v in overrides.items() if v is not None})
    out_dir = args.out or Path("results") / check_name(config.name, "the config file's name (the default --out is "
                                                                  "results/<name>; rename it or pass --out)")
    require_folder(out_dir, "--out", writable=True)
    runtime = Runtime.resolve(config.device, config.precision, progress=not args.quiet,
                              loader_workers=config.loader_workers, share=config.share)
    if args.dry_run:
        return print_plan(config, runtime)
    outcome = run_suite(config, out_dir, runtime, keep_checkpoints=args.keep_checkpoints)
    report = generate_report([out_dir], out_dir, config.comparison)
    for line in [s.line() for s in report.skipped] + report.notes:
        print(line, file=sys.stderr)
    print(report.markdown.read_text())
    print(f"{len(outcome.ran)} runs done, {len(outcome.skipped)} already finished, {len(outcome.failed)} failed, "
          f"{len(outcome.diverged)} diverged")
    for status, run_ids in (("failed", outcome.failed), ("diverged", outcome.diverged)):
        for run_id in run_ids:
            print(f"{status}: {out_dir / 'runs' / run_id / 'result.json'}")
    print(f"results: {out_dir}/runs/  leaderboard: {report.leaderboard}\nreport: {report.html}")
    return EXIT_RUNS_FAILED if outcome.failed else EXIT_OK


def print_plan(config, runtime) -> int:
    from benchmark.dryrun import dry_run, plan_table

    runs = dry_run(config, runtime)
    print(plan_table(runs))
    print(f"{len(runs)} runs planned; config, weights and data checked (nothing trained)")
    print(runtime.precision_line())
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
