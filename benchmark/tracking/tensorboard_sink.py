"""TensorBoard: event files through `torch.utils.tensorboard.SummaryWriter`, one folder per run,
`<log_dir>/<run_id>/` (`tensorboard --logdir <results>/tensorboard` shows every run of a suite side by side).

The configuration is a text summary (`config`, JSON), numbers are scalars under the names tracker.py gives, the
status a text summary (`status`). TensorBoard has no artifact store: `result.json` is copied into the run's event
folder. A resumed run writes a new event file into the same folder, which TensorBoard reads as one run; a run that
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
from benchmark.tracking.base import SinkContext, SinkParams, register_sink


@dataclass(frozen=True)
class TensorboardParams(SinkParams):
    REQUIRES = ("tensorboard", "tensorboard")

    log_dir: str = ""  # "" = <results>/tensorboard; each run writes <log_dir>/<run_id>/


class TensorboardSink:
    def __init__(self, params: TensorboardParams, context: SinkContext) -> None:
        self.log_dir, self.out_dir = params.log_dir, context.out_dir
        self.writer: Any = None

    def start(self, name: str, config: Mapping[str, Any], resume_id: Optional[str]) -> str:
        from torch.utils.tensorboard import SummaryWriter

        self.folder = Path(self.log_dir) / name if self.log_dir else real_folder(self.out_dir, "tensorboard", name)
        self.writer = SummaryWriter(str(self.folder))
        if not resume_id:
            self.writer.add_text("config", json.dumps(dict(config), indent=1, sort_keys=True), 0)
        return name

    def log(self, values: Mapping[str, float], step: int) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def finish(self, result_file: Path, status: str) -> None:
        self.writer.add_text("status", status, 0)
        self.writer.close()
        write_atomic(self.folder / result_file.name, result_file.read_bytes())


@register_sink("tensorboard", TensorboardParams)
def tensorboard_sink(params: TensorboardParams, context: SinkContext) -> TensorboardSink:
    return TensorboardSink(params, context)
