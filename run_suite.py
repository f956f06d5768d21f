"""Run a continual-learning suite: every (backbone, stream, strategy, seed) of a YAML config.

    python run_suite.py [--config configs/mini.yaml] [--out DIR] [--seeds 0 1 2] [--strategies a b]
                        [--streams x y] [--set KEY=VALUE ...] [--quiet] [--keep-checkpoints] [--dry-run]

Results land in DIR/runs/<run_id>/result.json (default DIR: results/<config name>); finished runs are skipped on
a re-run; the leaderboard is rebuilt at the end. Exit codes: 0 all runs finished, 1 some run failed, 2 bad input
(one line on stderr, nothing written; also a results folder that cannot take its files: a full disk, a planted link),
130 interrupted by Ctrl-C, 143 by SIGTERM (workers stopped, finished runs kept; rerun to resume); see
benchmark/errors.py and docs/safety.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path



def default_config() -> Path:
    """configs/mini.yaml: beside this file in a source checkout, inside the installed package (`cl_bench/configs`)
    otherwise."""
    here = Path(__file__).resolve().parent / "configs" / "mini.yaml"
    if here.is_file():
        return here
    import cl_bench

    return Path(cl_bench.__file__).resolve().parent / "configs" / "mini.yaml"


def parse_args(argv: list[str], prog: str = "run_suite.py") -> argparse.Namespace:
    from benchmark.errors import ArgumentParser

    parser = ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=None, help="YAML suite (default: configs/mini.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a key of the suite file, e.g. --set strategies.lora.rank=4 --set seeds=[1,2]")
    parser.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                        help="import a module that registers strategies, streams or backbones (a plugin)")
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
    args = parser.parse_args(argv)
    args.config = args.config or default_config()
    return args


def main(argv: list[str], prog: str = "run_suite.py") -> int:
    from benchmark.errors import EXIT_BAD_INPUT, UserInputError, interrupt_exit, terminate_as_interrupt  # no torch

    try:
        with terminate_as_interrupt():
            return run(parse_args(argv, prog))
    except UserInputError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt as error:  # Ctrl-C or SIGTERM: the suite has stopped its workers and released the lock
        print("interrupted: finished runs and per-task checkpoints are kept; run the same command again to resume",
              file=sys.stderr)
        return interrupt_exit(error)


def run(args: argparse.Namespace) -> int:
    # Avalanche imports qpsolvers, which warns at import that no QP solver is installed (only GEM-like methods need one);
    # worker processes import it before any code of ours runs, so they are told through the environment they inherit.
    warnings.filterwarnings("ignore", message="no QP solver found")
    os.environ["PYTHONWARNINGS"] = ",".join(filter(None, [os.environ.get("PYTHONWARNINGS"),
                                                          "ignore:no QP solver found"]))
    from benchmark.config import parse_suite, read_suite, require_folder, select  # no torch

    raw = read_suite(args.config, args.overrides)  # a missing or broken suite file is told before torch loads
    # Imported after argument parsing and reading the file: `--help` and a mistyped path answer without loading torch.
    import strategies  # noqa: F401  (registers the built-in strategies)
    from benchmark.errors import EXIT_OK, EXIT_RUNS_FAILED
    from benchmark.runtime import Runtime
    from benchmark.safe_io import check_name
    from benchmark.suite import run_suite
    from benchmark.tracking import finish_suite
    from reports.report import generate_report

    overrides = {"name": args.executor, "workers": args.workers, "ray_address": args.ray_address,
                 "submitit_cluster": args.submitit_cluster}
    config = select(parse_suite(raw, args.config.stem), streams=args.streams, strategies=args.strategies,
                    seeds=args.seeds, executor={k: v for k, v in overrides.items() if v is not None},
                    imports=args.imports)
    out_dir = args.out or Path("results") / check_name(config.name, "the config file's name (the default --out is "
                                                                  "results/<name>; rename it or pass --out)")
    require_folder(out_dir, "--out", writable=True)
    runtime = Runtime.resolve(config.device, config.precision, progress=not args.quiet,
                              loader_workers=config.loader_workers, share=config.share)
    if args.dry_run:
        return print_plan(config, runtime)
    outcome = run_suite(config, out_dir, runtime, keep_checkpoints=args.keep_checkpoints, finished=print_finished)
    report = generate_report([out_dir], out_dir, config.comparison)
    finish_suite(outcome.tracking, out_dir, report.files, "failed" if outcome.failed else "ok")
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


def print_finished(spec, status: str, path: Path) -> None:
    """One line per finished run, also with --quiet: the suite is alive and how each run went."""
    from benchmark.results import load_result

    result = load_result(path) or {}
    metrics, cost = result.get("metrics") or {}, result.get("cost") or {}
    avg_acc = f"avg_acc {metrics['avg_acc']:.2f}" if isinstance(metrics.get("avg_acc"), float) else status
    seconds = f", {cost['wall_time_s']:.0f} s" if isinstance(cost.get("wall_time_s"), (int, float)) else ""
    print(f"{status}: {spec.strategy} on {spec.stream}, seed {spec.seed}: {avg_acc}{seconds}", flush=True)


def print_plan(config, runtime) -> int:
    from benchmark.dryrun import dry_run, plan_table

    runs = dry_run(config, runtime)
    print(plan_table(runs))
    print(f"{len(runs)} runs planned; config, weights and data checked (nothing trained)")
    print(runtime.precision_line())
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
