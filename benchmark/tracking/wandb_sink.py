"""Weights & Biases: one W&B run per suite run, offline by default (nothing leaves the machine; `wandb sync
<results>/wandb/offline-run-*` uploads later), grouped by the suite's name.

The configuration is the run's `config`; numbers go through `run.log(values, step=...)` under the names tracker.py
gives; `result.json` is a W&B artifact of type `result`; the status is `summary.status` and the exit code (0 for
ok, 1 otherwise). A resumed run calls `wandb.init(id=<the stored id>, resume="allow")`: offline, that writes a
second `offline-run-*-<id>` folder of the same run id, which `wandb sync` merges into one run. The run is named
`strategy · stream · seed` and tagged with the code (`base.code_tags`, as `key=value` W&B tags).

Not sent to W&B: per-step training numbers (`train_every` is not a parameter here: W&B keeps one step axis per run
and drops values logged at a step below the last one, so optimiser steps cannot share it with the task steps the
other numbers use) and the report (W&B has no parent run to hold it; the runs of a suite are grouped by its name).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

from benchmark.config import require
from benchmark.results import STATUS_OK
from benchmark.safe_io import real_folder
from benchmark.tracking.base import SinkContext, SinkParams, TrackedRun, register_sink

MODES = ("offline", "online")


@dataclass(frozen=True)
class WandbParams(SinkParams):
    REQUIRES = ("wandb", "wandb")

    project: str = "cl-vit-bench"
    mode: str = "offline"  # offline (no network; sync later) or online (needs `wandb login`)
    dir: str = ""  # "" = the results folder; W&B writes <dir>/wandb/
    entity: str = ""  # "" = the logged-in user's default

    def __post_init__(self) -> None:
        require(self.mode in MODES, "mode", f"one of {', '.join(MODES)}", self.mode)


class WandbSink:
    def __init__(self, params: WandbParams, context: SinkContext) -> None:
        self.params = params
        self.dir = Path(params.dir) if params.dir else context.out_dir
        self.group = context.experiment
        self.run: Any = None

    def start(self, run: TrackedRun, resume_id: Optional[str]) -> str:
        import wandb

        if self.params.dir:
            self.dir.mkdir(parents=True, exist_ok=True)
        else:  # W&B writes <results>/wandb/: a real folder of the results folder, not a link planted there
            real_folder(self.dir, "wandb")
        self.run = wandb.init(project=self.params.project, entity=self.params.entity or None, dir=str(self.dir),
                              mode=self.params.mode, id=resume_id, name=run.title,
                              tags=[f"{key}={value}" for key, value in run.tags.items()],
                              group=self.group or None, config=dict(run.config),
                              resume="allow" if resume_id else None,
                              reinit="create_new", settings=wandb.Settings(silent=True, console="off"))
        return self.run.id

    def log(self, values: Mapping[str, float], step: int) -> None:
        self.run.log(dict(values), step=step)

    def finish(self, result_file: Path, status: str, final: Mapping[str, float]) -> None:
        import wandb

        artifact = wandb.Artifact(f"result-{self.run.id}", type="result")
        artifact.add_file(str(result_file))
        self.run.log_artifact(artifact)
        self.run.summary["status"] = status
        self.run.finish(exit_code=0 if status == STATUS_OK else 1)


@register_sink("wandb", WandbParams)
def wandb_sink(params: WandbParams, context: SinkContext) -> WandbSink:
    return WandbSink(params, context)
