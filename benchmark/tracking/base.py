"""What every tracking sink provides, the sink registry, and the validated tracking plan of a suite.

A sink is told three things about a run: `start` (its configuration; a resumed run passes the id the sink returned
the first time, so the same tracked run continues), `log` (named numbers at a step), `finish` (the result file and
the run's status). What is logged is decided once, in `tracker.py`; a sink only says where it goes. What runs share
(MLflow's experiment) is created once, before any worker starts (`prepare_tracking`, `SinkParams.prepare`), so that
workers never race to create it.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping, Optional, Protocol

from benchmark.config import SuiteConfig
from benchmark.errors import ConfigError
from benchmark.registry import BuilderRegistry

SINKS = BuilderRegistry("tracking sink", "tracking")
register_sink: Callable[[str, type], Callable] = SINKS.register_builder


class Sink(Protocol):
    def start(self, name: str, config: Mapping[str, Any], resume_id: Optional[str]) -> str:
        """Open the tracked run (a new one, or `resume_id`'s), record the configuration once; return its id."""

    def log(self, values: Mapping[str, float], step: int) -> None:
        """Record numbers at a step (tasks trained so far)."""

    def finish(self, result_file: Path, status: str) -> None:
        """Store the result file with the tracked run and close it as finished (status ok) or failed."""


@dataclass(frozen=True)
class SinkContext:
    """Where a sink's defaults point: the suite's results folder and name."""

    out_dir: Path
    experiment: str


class SinkParams:
    """Base of a sink's hyper-parameter dataclass: `REQUIRES` is (package imported, pip extra that installs it)."""

    REQUIRES: ClassVar[tuple[str, str]]

    def prepare(self, context: SinkContext) -> None:
        """Create what every run of the suite shares, once, in the suite's process before workers start (default:
        nothing)."""


@dataclass(frozen=True)
class TrackingPlan:
    """A suite's sinks with validated hyper-parameters (picklable: executors ship it with each run)."""

    experiment: str = ""  # the suite's name: MLflow's experiment, W&B's group
    sinks: tuple[tuple[str, Any], ...] = ()


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


def prepare_tracking(plan: TrackingPlan, out_dir: Path) -> None:
    """Every sink's shared state (`SinkParams.prepare`), created once before the runs start."""
    for _, params in plan.sinks:
        params.prepare(SinkContext(out_dir, plan.experiment))


def flat_config(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """A nested configuration as `a.b.c -> value` strings (lists as JSON), for trackers with flat parameters."""
    flat: dict[str, str] = {}
    for key, value in config.items():
        if isinstance(value, Mapping) and value:
            flat.update(flat_config(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value if isinstance(value, str) else json.dumps(value)
    return flat
