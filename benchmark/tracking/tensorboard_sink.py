"""TensorBoard: event files through `torch.utils.tensorboard.SummaryWriter`, one folder per run,
`<log_dir>/<run_id>/` (`tensorboard --logdir <results>/tensorboard` shows every run of a suite side by side).

The configuration is a text summary (`config`, JSON), numbers are scalars under the names tracker.py gives (with
`train/loss` and `train/lr` every `train_every` optimiser steps), the status a text summary (`status`). When the run
ends, its hyper-parameters (tracker.hparams) and final numbers (`metrics/*`, `cost/*`, the scalars already logged at
the last step) go to the HParams plugin (`torch.utils.tensorboard.summary.hparams`: experiment, session start and
end, written into the run's own folder rather than `SummaryWriter.add_hparams`' extra sub-run, which would log every
final number a second time). TensorBoard has no artifact store and no parent runs: `result.json` is copied into the
run's event folder, and the report stays in the results folder. A resumed run writes a new event file into the same folder, which TensorBoard reads as one run; a run that
starts again from task 0 logs steps that go back, and TensorBoard's reader drops the earlier, orphaned values.
The run's folder is always `<log_dir>/<run_id>` (the id stored in `tracking.json` is the run id, never a path read
back from the results folder); the default `<results>/tensorboard/<run_id>` is made of real folders
(`benchmark.safe_io.real_folder`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

from benchmark.safe_io import real_folder, write_atomic
from benchmark.tracking.base import SinkContext, SinkParams, TrackedRun, register_sink, require_train_every


@dataclass(frozen=True)
class TensorboardParams(SinkParams):
    REQUIRES = ("tensorboard", "tensorboard")

    log_dir: str = ""  # "" = <results>/tensorboard; each run writes <log_dir>/<run_id>/
    train_every: int = 20  # log train/loss and train/lr every this many optimiser steps; 0 = never

    def __post_init__(self) -> None:
        require_train_every(self)


class TensorboardSink:
    def __init__(self, params: TensorboardParams, context: SinkContext) -> None:
        self.log_dir, self.out_dir = params.log_dir, context.out_dir
        self.writer: Any = None

    def start(self, run: TrackedRun, resume_id: Optional[str]) -> str:
        from torch.utils.tensorboard import SummaryWriter

        name = run.run_id
        self.folder = Path(self.log_dir) / name if self.log_dir else real_folder(self.out_dir, "tensorboard", name)
        self.writer = SummaryWriter(str(self.folder))
        self.hparams = dict(run.hparams)
        if not resume_id:
            self.writer.add_text("config", json.dumps(dict(run.config), indent=1, sort_keys=True), 0)
        return name

    def log(self, values: Mapping[str, float], step: int) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def finish(self, result_file: Path, status: str, final: Mapping[str, float]) -> None:
        from torch.utils.tensorboard.summary import hparams

        for summary in hparams(self.hparams, dict(final)):  # experiment, session start, session end
            self.writer.file_writer.add_summary(summary)
        self.writer.add_text("status", status, 0)
        self.writer.close()
        write_atomic(self.folder / result_file.name, result_file.read_bytes())


@register_sink("tensorboard", TensorboardParams)
def tensorboard_sink(params: TensorboardParams, context: SinkContext) -> TensorboardSink:
    return TensorboardSink(params, context)
