"""The Python API for notebooks: read stored results into pandas, run a suite from a config object, rebuild a report.

    import cl_bench
    runs = cl_bench.load_results("results/mini")          # one row per run: identity, metrics, costs
    runs.groupby(["stream", "strategy"])["avg_acc"].mean()
    cl_bench.run({"backbones": {"vit-mini": {}}, "streams": {"mini-split-digits": {}},
                  "strategies": {"linear": {"epochs": 1}}}, out="results/notebook")

Like the rest of the library these functions return values and raise (`benchmark.errors.UserInputError` for
anything the caller can fix); `run_suite.py` and `cl-bench` are the layer that prints and exits. `run` does what
`run_suite.py` does (plan, check, run, write results, rebuild the report) through the same functions.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Iterable, Mapping, Union

import pandas as pd

from benchmark.config import SuiteConfig, load_suite, parse_suite
from benchmark.errors import ConfigError
from benchmark.results import STATUS_OK, numeric_fields

Folders = Union[str, Path, Iterable[Union[str, Path]]]
IDENTITY = ["run_id", "status", "stream", "strategy", "backbone", "seed", "config_id"]


def result_row(result: Mapping[str, Any]) -> dict[str, Any]:
    """One stored result as a flat row: its identity, then every metric and cost as a column (the leaderboard's
    names: `avg_acc`, `retained_last_<protocol>`, `pretrain_drop_<protocol>`, `params_trainable`, ...), then the
    accuracy matrix as a list; a failed or diverged run keeps its identity and `error`, its numbers empty."""
    from reports.leaderboard import config_id, run_row  # the report layer owns the leaderboard's column names

    row: dict[str, Any] = {key: result.get(key) for key in IDENTITY[:-1]}
    row["config_id"] = config_id(result) if "config" in result else None
    if result.get("status") != STATUS_OK:
        return {**row, "error": result.get("error")}
    metrics = {k: v for k, v in result["metrics"].items() if k not in ("retained_pretrain_acc", "pretrain_drop")}
    return {**row, **numeric_fields(metrics), **numeric_fields(result["cost"]), **run_row(dict(result)),
            "accuracy_matrix": result["accuracy_matrix"]}


def _folders(folders: Folders) -> list[Path]:
    return [Path(folders)] if isinstance(folders, (str, Path)) else [Path(f) for f in folders]


def load_results(folders: Folders, *, finished_only: bool = False) -> pd.DataFrame:
    """Every stored run under `folder/runs/` (or several folders, merged by run id as `python -m reports` merges
    them) as a DataFrame, one row per run, in run-id order; `finished_only` keeps status `ok` only. Result files that
    do not check out are left out and named in `frame.attrs["skipped"]`. A folder without `runs/` is a ConfigError."""
    from reports.report import collect

    paths = _folders(folders)
    missing = [p for p in paths if not (p / "runs").is_dir()]
    if missing:
        raise ConfigError(f"{missing[0]} holds no runs/ folder; pass the --out folder of a suite")
    results, skipped = collect(paths)
    rows = [result_row(r) for r in results if not finished_only or r.get("status") == STATUS_OK]
    frame = pd.DataFrame(rows) if rows else pd.DataFrame(columns=IDENTITY)
    frame.attrs["skipped"] = [s.line() for s in skipped]  # result files that do not check out, each with why
    return frame


def suite_config(config: Union[SuiteConfig, Mapping[str, Any], str, Path], name: str = "notebook") -> SuiteConfig:
    """A validated `SuiteConfig` from itself, a mapping with the YAML file's keys (named `name`), or a YAML path."""
    if isinstance(config, SuiteConfig):
        return config
    if isinstance(config, (str, Path)):
        return load_suite(Path(config))
    return parse_suite(dict(config), name)


def run(config: Union[SuiteConfig, Mapping[str, Any], str, Path], out: Union[str, Path], *, name: str = "notebook",
        progress: bool = False, keep_checkpoints: bool = False) -> pd.DataFrame:
    """Run a suite as `run_suite.py --config ... --out out` does (finished runs skipped, failed ones recorded),
    rebuild the report in `out`, and return `load_results(out)`."""
    warnings.filterwarnings("ignore", message="no QP solver found")  # see run_suite.py
    import strategies  # noqa: F401  (registers the built-in strategies)
    from benchmark.runtime import Runtime
    from benchmark.suite import run_suite
    from benchmark.tracking import finish_suite
    from reports.report import generate_report

    suite = suite_config(config, name)
    runtime = Runtime.resolve(suite.device, suite.precision, progress=progress, loader_workers=suite.loader_workers,
                              share=suite.share)
    outcome = run_suite(suite, Path(out), runtime, keep_checkpoints=keep_checkpoints)
    built = generate_report([Path(out)], Path(out))
    finish_suite(outcome.tracking, Path(out), built.files, "failed" if outcome.failed else "ok")  # the parent run
    return load_results(out)


def report(folders: Folders, out: Union[str, Path, None] = None) -> Path:
    """Rebuild leaderboards, plots and report.html from stored results (`python -m reports`); returns the page."""
    from reports.report import generate_report

    paths = _folders(folders)
    return generate_report(paths, Path(out) if out else paths[0]).html
