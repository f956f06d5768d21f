"""TensorBoard: event files through `torch.utils.tensorboard.SummaryWriter`, one folder per run,
`<log_dir>/<run_id>/` (`tensorboard --logdir <results>/tensorboard` shows every run of a suite side by side).

The configuration is a text summary (`config`, JSON), numbers are scalars under the names tracker.py gives, the
status a text summary (`status`). TensorBoard has no artifact store: `result.json` is copied into the run's event
folder. A resumed run writes a new event file into the same folder, which TensorBoard reads as one run; a run that
starts again from task 0 logs steps that go back, and TensorBoard's reader drops the earlier, orphaned values.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

from benchmark.tracking.base import SinkContext, SinkParams, register_sink


@dataclass(frozen=True)
class TensorboardParams(SinkParams):
    REQUIRES = ("tensorboard", "tensorboard")

    log_dir: str = ""  # "" = <results>/tensorboard; each run writes <log_dir>/<run_id>/


class TensorboardSink:
    def __init__(self, params: TensorboardParams, context: SinkContext) -> None:
        self.root = Path(params.log_dir) if params.log_dir else context.out_dir / "tensorboard"
        self.writer: Any = None

    def start(self, name: str, config: Mapping[str, Any], resume_id: Optional[str]) -> str:
        from torch.utils.tensorboard import SummaryWriter

        folder = Path(resume_id) if resume_id else self.root / name
        self.folder = folder
        self.writer = SummaryWriter(str(folder))
        if not resume_id:
            self.writer.add_text("config", json.dumps(dict(config), indent=1, sort_keys=True), 0)
        return str(folder)

    def log(self, values: Mapping[str, float], step: int) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def finish(self, result_file: Path, status: str) -> None:
        self.writer.add_text("status", status, 0)
        self.writer.close()
        shutil.copyfile(result_file, self.folder / result_file.name)


@register_sink("tensorboard", TensorboardParams)
def tensorboard_sink(params: TensorboardParams, context: SinkContext) -> TensorboardSink:
    return TensorboardSink(params, context)
