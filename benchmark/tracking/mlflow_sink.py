"""MLflow: one MLflow run per suite run, in the suite's experiment, through `MlflowClient` (no global active run, so
several runs in one process, or in worker processes, never share state).

`tracking_uri` "" means a file store in `<results>/mlruns` (`mlflow ui --backend-store-uri <results>/mlruns`).
MLflow 3 keeps the file store in maintenance mode and refuses it unless `MLFLOW_ALLOW_FILE_STORE=true`, which this
sink sets for `file:` URIs only (the user chose the file store); `sqlite:///<path>.db` is MLflow's own database
store, `http://host:port` a tracking server. Parameters are the run's configuration flattened (`strategy_params.lr`),
plus `config.json`; metrics as in tracker.py; `result.json` as an artifact; status FINISHED, or FAILED with tag
`cl_bench.status` (failed, diverged). The experiment is created once, before workers start (`prepare`), and found or
created idempotently by each run (a run started outside a suite, a race lost to another process).
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
from benchmark.tracking.base import SinkContext, SinkParams, flat_config, register_sink

BATCH = 100  # MLflow accepts at most 100 parameters per log_batch call


@dataclass(frozen=True)
class MlflowParams(SinkParams):
    REQUIRES = ("mlflow", "mlflow")

    tracking_uri: str = ""  # "" = file store <results>/mlruns; file:/path, sqlite:///path.db, http(s)://host:port
    experiment: str = ""  # "" = the suite's name

    def __post_init__(self) -> None:
        require(not self.tracking_uri or bool(urlparse(self.tracking_uri).scheme), "tracking_uri",
                "empty or a URI (file:/path, sqlite:///path.db, http://host:port)", self.tracking_uri)

    def prepare(self, context: SinkContext) -> None:
        """The suite's experiment, created once before the workers open their runs."""
        client, name = _client(self, context)
        experiment_id(client, name)


def _client(params: MlflowParams, context: SinkContext) -> tuple[Any, str]:
    """The client of the tracking URI (default: a file store in `<results>/mlruns`, a real folder) and the
    experiment's name."""
    uri = params.tracking_uri or real_folder(context.out_dir, "mlruns").resolve().as_uri()
    if uri.startswith("file:"):
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    from mlflow.tracking import MlflowClient

    return MlflowClient(uri), params.experiment or context.experiment or "cl-vit-bench"


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
        self.run_id = ""

    def start(self, name: str, config: Mapping[str, Any], resume_id: Optional[str]) -> str:
        from mlflow.entities import Param
        from mlflow.exceptions import MlflowException

        if resume_id:
            try:
                self.client.update_run(resume_id, status="RUNNING")
                self.run_id = resume_id
                return resume_id
            except MlflowException as error:
                warnings.warn(f"MLflow run {resume_id} of {name} cannot be reopened ({error}); starting a new one")
        experiment = experiment_id(self.client, self.experiment)
        self.run_id = self.client.create_run(experiment, run_name=name, tags={"cl_bench.run_id": name}).info.run_id
        params = [Param(key, value) for key, value in flat_config(config).items()]
        for start in range(0, len(params), BATCH):
            self.client.log_batch(self.run_id, params=params[start:start + BATCH])
        self.client.log_dict(self.run_id, dict(config), "config.json")
        return self.run_id

    def log(self, values: Mapping[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, v, now, step) for k, v in values.items()])

    def finish(self, result_file: Path, status: str) -> None:
        self.client.log_artifact(self.run_id, str(result_file))
        self.client.set_tag(self.run_id, "cl_bench.status", status)
        self.client.set_terminated(self.run_id, "FINISHED" if status == STATUS_OK else "FAILED")


@register_sink("mlflow", MlflowParams)
def mlflow_sink(params: MlflowParams, context: SinkContext) -> MlflowSink:
    return MlflowSink(params, context)
