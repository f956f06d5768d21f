"""Weights & Biases: one W&B run per suite run, offline by default (nothing leaves the machine; `wandb sync
<results>/wandb/offline-run-*` uploads later), grouped by the suite's name.

The configuration is the run's `config`; numbers go through `run.log(values, step=...)` under the names tracker.py
gives; `result.json` is a W&B artifact of type `result`; the status is `summary.status` and the exit code (0 for
ok, 1 otherwise). A resumed run calls `wandb.init(id=<the stored id>, resume="allow")`: offline, that writes a
second `offline-run-*-<id>` folder of the same run id, which `wandb sync` merges into one run. The run is named
`strategy · stream · seed` and tagged with the code (`base.code_tags`, as `key=value` W&B tags).

The report: W&B has no parent runs, so each report the suite writes goes to a run of its own in the suite's group
(`job_type: report`, named `report · <results folder>`, tagged with the code), as one artifact of type `report`
named after the suite (`report-<suite>`: every report written is a new version of it), holding `report.html`, the
leaderboards, `plots/` and `pages/`; its exit code is 1 when a run of the suite failed.

Not sent to W&B: per-step training numbers (`train_every` is not a parameter here: W&B keeps one step axis per run
and drops values logged at a step below the last one, so optimiser steps cannot share it with the task steps the
other numbers use).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

from benchmark.config import require
from benchmark.results import STATUS_OK
from benchmark.safe_io import real_folder
from benchmark.tracking.base import SinkContext, SinkParams, TrackedRun, code_tags, register_sink

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

    def folder(self, context: SinkContext) -> Path:
        """Where W&B writes its `wandb/` folder: `dir`, or the results folder, where `wandb/` must be a real folder
        (not a link planted there)."""
        if self.dir:
            Path(self.dir).mkdir(parents=True, exist_ok=True)
            return Path(self.dir)
        real_folder(context.out_dir, "wandb")
        return context.out_dir

    def init(self, context: SinkContext, **run: Any) -> Any:
        """A new W&B run (or a resumed one: `id=` and `resume=`) of this project in the suite's group."""
        import wandb

        return wandb.init(project=self.project, entity=self.entity or None, dir=str(self.folder(context)),
                          mode=self.mode, group=context.experiment or None, reinit="create_new",
                          settings=wandb.Settings(silent=True, console="off"), **run)

    def finish_suite(self, context: SinkContext, files: list[Path], status: str) -> None:
        """The report's files as an artifact of a `report` run in the suite's group (see the module docstring)."""
        import wandb

        run = self.init(context, name=f"report · {context.out_dir.name}", job_type="report",
                        tags=tag_list(code_tags()))
        artifact = wandb.Artifact(f"report-{re.sub(r'[^A-Za-z0-9_.-]', '-', context.experiment or 'suite')}",
                                  type="report")
        for path in files:
            if path.is_dir():
                artifact.add_dir(str(path), name=path.name)
            elif path.is_file():
                artifact.add_file(str(path))
        run.log_artifact(artifact)
        close(run, status)


class WandbSink:
    def __init__(self, params: WandbParams, context: SinkContext) -> None:
        self.params, self.context = params, context
        self.run: Any = None

    def start(self, run: TrackedRun, resume_id: Optional[str]) -> str:
        self.run = self.params.init(self.context, id=resume_id, name=run.title, config=dict(run.config),
                                    tags=tag_list(run.tags), resume="allow" if resume_id else None)
        return self.run.id

    def log(self, values: Mapping[str, float], step: int) -> None:
        self.run.log(dict(values), step=step)

    def finish(self, result_file: Path, status: str, final: Mapping[str, float]) -> None:
        import wandb

        artifact = wandb.Artifact(f"result-{self.run.id}", type="result")
        artifact.add_file(str(result_file))
        self.run.log_artifact(artifact)
        close(self.run, status)


def tag_list(tags: Mapping[str, str]) -> list[str]:
    """W&B's tags are plain strings: `key=value`."""
    return [f"{key}={value}" for key, value in tags.items()]


def close(run: Any, status: str) -> None:
    """The status in the run's summary, and its exit code: 0 for ok, 1 otherwise."""
    run.summary["status"] = status
    run.finish(exit_code=0 if status == STATUS_OK else 1)


@register_sink("wandb", WandbParams)
def wandb_sink(params: WandbParams, context: SinkContext) -> WandbSink:
    return WandbSink(params, context)
