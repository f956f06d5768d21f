"""What every tracking sink provides, the sink registry, and the validated tracking plan of a suite.

A sink is told three things about a run: `start` (a `TrackedRun`: its names, configuration, hyper-parameters and code
tags; a resumed run passes the id the sink returned the first time, so the same tracked run continues), `log` (named
numbers at a step), `finish` (the result file, the run's status and its final numbers). What is logged is decided once,
in `tracker.py`; a sink only says where it goes. What runs share (MLflow's experiment and the suite's parent run) is
created once, before any worker starts (`SinkParams.prepare`, called by `benchmark.tracking.suite_runs`), and its id
reaches the workers in the plan (`TrackingPlan.parents`).
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping, Optional, Protocol

from benchmark.config import SuiteConfig, require
from benchmark.errors import ConfigError
from benchmark.registry import BuilderRegistry
from benchmark.results import package_version, versions

SINKS = BuilderRegistry("tracking sink", "tracking")
register_sink: Callable[[str, type], Callable] = SINKS.register_builder


@dataclass(frozen=True)
class TrackedRun:
    """What a sink records about a run when it opens it."""

    run_id: str  # the result's run id (its folder name): TensorBoard's folder, MLflow's tag cl_bench.run_id
    title: str  # the short name shown in run lists: `strategy · stream · seed`
    config: Mapping[str, Any]  # the run's spec (`RunSpec.as_dict`)
    hparams: Mapping[str, Any]  # what the run varies: strategy, stream, backbone, seed and the strategy's parameters
    tags: Mapping[str, str]  # the code: `code_tags`


class Sink(Protocol):
    def start(self, run: TrackedRun, resume_id: Optional[str]) -> str:
        """Open the tracked run (a new one, or `resume_id`'s), record the configuration once; return its id."""

    def log(self, values: Mapping[str, float], step: int) -> None:
        """Record numbers at a step (tasks trained so far; for `train/*`, optimiser steps)."""

    def finish(self, result_file: Path, status: str, final: Mapping[str, float]) -> None:
        """Store the result file with the tracked run and close it as finished (status ok) or failed; `final` holds
        the final numbers just logged (none for a run that did not finish)."""


@dataclass(frozen=True)
class SinkContext:
    """Where a sink's defaults point: the suite's results folder and name, and the suite's parent run (its id in
    this sink, "" for none)."""

    out_dir: Path
    experiment: str
    parent: str = ""


class SinkParams:
    """Base of a sink's hyper-parameter dataclass: `REQUIRES` is (package imported, pip extra that installs it).
    `train_every`: log the training loss and lr every this many optimiser steps (0: never); a sink that logs
    per-step numbers makes it a field of its dataclass."""

    REQUIRES: ClassVar[tuple[str, str]]
    train_every: int = 0

    def prepare(self, context: SinkContext, parent_id: str) -> str:
        """Create what every run of the suite shares (the suite's parent run: `parent_id`'s when the suite resumes
        and that run still exists), once, in the suite's process before workers start; return the parent's id
        ("" for none, the default)."""
        return ""

    def finish_suite(self, context: SinkContext, files: list[Path], status: str) -> None:
        """Store the report's `files` (files and folders) with the suite's parent run and close it (default:
        nothing)."""


@dataclass(frozen=True)
class TrackingPlan:
    """A suite's sinks with validated hyper-parameters (picklable: executors ship it with each run)."""

    experiment: str = ""  # the suite's name: MLflow's experiment, W&B's group
    sinks: tuple[tuple[str, Any], ...] = ()
    parents: tuple[tuple[str, str], ...] = ()  # sink name -> the suite's parent run there (`suite_runs.open_suite`)

    def context(self, out_dir: Path, name: str) -> SinkContext:
        """Sink `name`'s context: the results folder, the experiment, its parent run."""
        return SinkContext(out_dir, self.experiment, dict(self.parents).get(name, ""))


def require_package(name: str, params: SinkParams) -> None:
    """A one-line error naming the extra when the sink's package is not installed."""
    package, extra = params.REQUIRES
    if importlib.util.find_spec(package) is None:
        raise ConfigError(f"tracking.{name}: the {package} package is not installed; pip install '.[{extra}]' "
                          f"(or pip install {package}), or remove tracking.{name} from the config")


def plan_tracking(config: SuiteConfig) -> TrackingPlan:
    """Validate the suite's `tracking:` section (names, hyper-parameters, installed packages)."""
    sinks = []
    for component in config.tracking:
        params = SINKS.params(component.name, component.params)
        require_package(component.name, params)
        sinks.append((component.name, params))
    return TrackingPlan(config.name, tuple(sinks))


def require_train_every(params: SinkParams) -> None:
    """`train_every` is a count of steps: 0 (never) or more."""
    require(isinstance(params.train_every, int) and params.train_every >= 0, "train_every",
            "an integer >= 0 (0: no per-step training numbers)", params.train_every)


def code_tags() -> dict[str, str]:
    """Which code produced a run: `cl_bench.git_commit` (only in a git checkout), `cl_bench.version` (only when the
    package is installed), `cl_bench.torch`, `cl_bench.timm`."""
    found = versions()
    tags = {"cl_bench.git_commit": found["git_commit"], "cl_bench.version": package_version(),
            "cl_bench.torch": found["torch"], "cl_bench.timm": found["timm"]}
    return {key: value for key, value in tags.items() if value and value != "unknown"}


def flat_config(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """A nested configuration as `a.b.c -> value` strings (lists as JSON), for trackers with flat parameters."""
    flat: dict[str, str] = {}
    for key, value in config.items():
        if isinstance(value, Mapping) and value:
            flat.update(flat_config(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value if isinstance(value, str) else json.dumps(value)
    return flat
