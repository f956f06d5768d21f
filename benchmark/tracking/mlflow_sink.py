"""MLflow: one MLflow run per suite run, in the suite's experiment, through `MlflowClient` (no global active run, so
several runs in one process, or in worker processes, never share state).

`tracking_uri` "" means a file store in `<results>/mlruns` (`mlflow ui --backend-store-uri <results>/mlruns`).
MLflow 3 keeps the file store in maintenance mode and refuses it unless `MLFLOW_ALLOW_FILE_STORE=true`, which this
sink sets for `file:` URIs only (the user chose the file store); `sqlite:///<path>.db` is MLflow's own database
store, `http://host:port` a tracking server. Parameters are the run's configuration flattened (`strategy_params.lr`),
plus `config.json`; metrics as in tracker.py (with `train/loss` and `train/lr` every `train_every` optimiser steps);
`result.json` as an artifact; status FINISHED, or FAILED with tag `cl_bench.status` (failed, diverged). The run is
named `strategy · stream · seed`, tagged with its run id (`cl_bench.run_id`) and the code (`base.code_tags`).

The experiment and the suite's parent run (named after the results folder, tagged with the code) are created once,
before workers start (`prepare`); every run of the suite is its child (tag `mlflow.parentRunId`, which MLflow's UI
nests). After the report is written, `finish_suite` stores it with the parent (`report.html`, `leaderboard*.csv`,
`leaderboard.md`, `plots/`, `pages/`) and closes it. The experiment is also found or created idempotently by each
run (a run started outside a suite, a race lost to another process).
"""

from __future__ import annotations

import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional
from urllib.parse import urlparse

from benchmark.config import require
from benchmark.results import STATUS_OK
from benchmark.safe_io import real_folder
from benchmark.tracking.base import (SinkContext, SinkParams, TrackedRun, code_tags, flat_config, register_sink,
                                     require_train_every)

BATCH = 100  # MLflow accepts at most 100 parameters per log_batch call


@dataclass(frozen=True)
class MlflowParams(SinkParams):
    REQUIRES = ("mlflow", "mlflow")

    tracking_uri: str = ""  # "" = file store <results>/mlruns; file:/path, sqlite:///path.db, http(s)://host:port
    experiment: str = ""  # "" = the suite's name
    train_every: int = 20  # log train/loss and train/lr every this many optimiser steps; 0 = never

    def __post_init__(self) -> None:
        require(not self.tracking_uri or bool(urlparse(self.tracking_uri).scheme), "tracking_uri",
                "empty or a URI (file:/path, sqlite:///path.db, http://host:port)", self.tracking_uri)
        require_train_every(self)

    def prepare(self, context: SinkContext, parent_id: str) -> str:
        """The suite's experiment and parent run, created once before the workers open their runs (a resumed suite
        reopens `parent_id`'s run)."""
        client, name = _client(self, context)
        experiment = experiment_id(client, name)
        if parent_id and reopened(client, parent_id, f"the suite {context.out_dir.name}"):
            return parent_id
        return client.create_run(experiment, run_name=context.out_dir.name or name,
                                 tags={"cl_bench.suite": str(context.out_dir), **code_tags()}).info.run_id

    def finish_suite(self, context: SinkContext, files: list[Path], status: str) -> None:
        """The report's files and folders as artifacts of the parent run (a folder keeps its name), then the parent
        closed: FINISHED, or FAILED when a run failed."""
        if not context.parent:
            return
        client, _ = _client(self, context)
        for path in files:
            if path.is_dir():
                client.log_artifacts(context.parent, str(path), artifact_path=path.name)
            elif path.is_file():
                client.log_artifact(context.parent, str(path))
        client.set_terminated(context.parent, "FINISHED" if status == STATUS_OK else "FAILED")


def _client(params: MlflowParams, context: SinkContext) -> tuple[Any, str]:
    """The client of the tracking URI (default: a file store in `<results>/mlruns`, a real folder) and the
    experiment's name."""
    uri = params.tracking_uri or real_folder(context.out_dir, "mlruns").resolve().as_uri()
    if uri.startswith("file:"):
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    from mlflow.tracking import MlflowClient

    return MlflowClient(uri), params.experiment or context.experiment or "cl-vit-bench"


def reopened(client: Any, run_id: str, what: str) -> bool:
    """Whether the stored run `run_id` could be set RUNNING again (it may have been deleted: then a warning)."""
    from mlflow.exceptions import MlflowException

    try:
        client.update_run(run_id, status="RUNNING")
        return True
    except MlflowException as error:
        warnings.warn(f"MLflow run {run_id} of {what} cannot be reopened ({error}); starting a new one")
        return False


def experiment_id(client: Any, name: str) -> str:
    """The id of experiment `name`, created if missing; another process creating it at the same moment is fine."""
    from mlflow.exceptions import MlflowException

    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    try:
        return client.create_experiment(name)
    except MlflowException:  # RESOURCE_ALREADY_EXISTS: created since we looked; anything else raises again below
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id


class MlflowSink:
    def __init__(self, params: MlflowParams, context: SinkContext) -> None:
        self.client, self.experiment = _client(params, context)
        self.parent, self.run_id = context.parent, ""

    def start(self, run: TrackedRun, resume_id: Optional[str]) -> str:
        from mlflow.entities import Param

        if resume_id and reopened(self.client, resume_id, run.run_id):
            self.run_id = resume_id
            return resume_id
        experiment = experiment_id(self.client, self.experiment)
        parent = {"mlflow.parentRunId": self.parent} if self.parent else {}
        tags = {"cl_bench.run_id": run.run_id, **run.tags, **parent}
        self.run_id = self.client.create_run(experiment, run_name=run.title, tags=tags).info.run_id
        params = [Param(key, value) for key, value in flat_config(run.config).items()]
        for start in range(0, len(params), BATCH):
            self.client.log_batch(self.run_id, params=params[start:start + BATCH])
        self.client.log_dict(self.run_id, dict(run.config), "config.json")
        return self.run_id

    def log(self, values: Mapping[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, v, now, step) for k, v in values.items()])

    def finish(self, result_file: Path, status: str, final: Mapping[str, float]) -> None:
        self.client.log_artifact(self.run_id, str(result_file))
        self.client.set_tag(self.run_id, "cl_bench.status", status)
        self.client.set_terminated(self.run_id, "FINISHED" if status == STATUS_OK else "FAILED")


@register_sink("mlflow", MlflowParams)
def mlflow_sink(params: MlflowParams, context: SinkContext) -> MlflowSink:
    return MlflowSink(params, context)
