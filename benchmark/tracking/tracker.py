"""One run's tracking: what is logged, when, to every sink of the plan, and the tracked runs' ids beside the result.

Logged, at step = tasks trained so far: after each task `accuracy/task_<j>` (the accuracy-matrix row: every task's
test set) and `retained/<protocol>` (with the pre-trained model's at step 0); at the end `metrics/<name>` and
`cost/<name>` (the result's numbers, flat as `benchmark.results.numeric_fields` makes them) at the last step, the
result file as an artifact and the status. The configuration (the run's spec), the hyper-parameters (strategy,
stream, backbone, seed and the strategy's parameters) and the code's tags (`base.code_tags`) are recorded when the run
opens, under its short name `strategy · stream · seed`. While the run trains, sinks with `train_every` > 0 get the
training loss and lr (`train/loss`, `train/lr`) at every `train_every`-th optimiser step (steps.py).

`tracking.json` in the run's folder keeps each sink's id of the tracked run; a run resumed from its checkpoint reopens
those, so a crash and a re-run make one tracked run, not two. A run that starts from scratch opens new ones. A
`tracking.json` that is not a small mapping of sink names to string ids (a folder, a FIFO, another shape) is ignored:
the run opens new tracked runs.
"""

from __future__ import annotations

import contextlib
import json
import math
import warnings
from pathlib import Path
from typing import Any, ContextManager, Mapping

from benchmark.checkpoints import Progress
from benchmark.results import STATUS_OK, RunSpec, numeric_fields, write_json_atomic
from benchmark.safe_io import UnreadableFile, read_bounded
from benchmark.tracking.base import SINKS, Sink, TrackedRun, TrackingPlan, code_tags
from benchmark.tracking.steps import StepLog, listening

IDS_FILE = "tracking.json"
MAX_IDS_BYTES = 2**16


def stored_ids(path: Path) -> dict[str, str]:
    """The tracked runs' ids a run's `tracking.json` holds, or none if it is missing or not what this module wrote."""
    try:
        ids = json.loads(read_bounded(path, MAX_IDS_BYTES))
    except (FileNotFoundError, UnreadableFile, ValueError, RecursionError):
        return {}
    valid = isinstance(ids, dict) and all(isinstance(v, str) for v in ids.values())
    return ids if valid else {}


def _finite(values: Mapping[str, Any]) -> dict[str, float]:
    """Numbers a tracker can store: undefined metrics (None, e.g. bwt of one task) and NaN are left out."""
    return {k: float(v) for k, v in values.items() if v is not None and math.isfinite(float(v))}


def final_values(result: Mapping[str, Any]) -> dict[str, float]:
    """`metrics/<name>` and `cost/<name>` of a finished result (retention curves are logged per task instead)."""
    metrics = {k: v for k, v in result["metrics"].items() if k != "retained_pretrain_acc"}
    return _finite({**{f"metrics/{k}": v for k, v in numeric_fields(metrics).items()},
                    **{f"cost/{k}": v for k, v in numeric_fields(result["cost"]).items()}})


def title(spec: RunSpec) -> str:
    """A run's short name in run lists: `strategy · stream · seed` (the run id, with its hash, is a tag)."""
    return f"{spec.strategy} · {spec.stream} · {spec.seed}"


def hparams(spec: RunSpec) -> dict[str, Any]:
    """What a run varies, for hyper-parameter views: strategy, stream, backbone, seed and the strategy's parameters
    (`strategy_params.<key>`); numbers, strings and booleans as they are, anything else (lists, mappings, null) as
    JSON, since hyper-parameter views take only those three kinds."""
    plain = (bool, int, float, str)
    strategy = {f"strategy_params.{key}": value if isinstance(value, plain) else json.dumps(value, sort_keys=True)
                for key, value in spec.strategy_params.items()}
    return {"strategy": spec.strategy, "stream": spec.stream, "backbone": spec.backbone, "seed": spec.seed, **strategy}


class Tracker:
    """The sinks of one run; constructing it does no I/O, `start` opens the tracked runs."""

    def __init__(self, plan: TrackingPlan, spec: RunSpec, out_dir: Path, run_folder: Path) -> None:
        self.plan, self.spec, self.out_dir, self.run_folder = plan, spec, out_dir, run_folder
        self.sinks: list[tuple[str, Sink]] = []

    def start(self, resuming: bool) -> None:
        """Open every sink's tracked run: the ones in `tracking.json` when resuming, new ones otherwise."""
        if not self.plan.sinks:
            return
        ids_path = self.run_folder / IDS_FILE
        ids = stored_ids(ids_path) if resuming else {}
        run = TrackedRun(self.spec.run_id, title(self.spec), self.spec.as_dict(), hparams(self.spec), code_tags())
        for name, params in self.plan.sinks:
            sink = SINKS.builder(name)(params, self.plan.context(self.out_dir, name))
            ids[name] = sink.start(run, ids.get(name))
            self.sinks.append((name, sink))
        write_json_atomic(ids_path, ids)

    def training(self) -> ContextManager[Any]:
        """While the run trains: the step log of the sinks that take per-step numbers (none: no log at all)."""
        every = [(params.train_every, sink) for (_, params), (_, sink) in zip(self.plan.sinks, self.sinks)
                 if params.train_every > 0]
        return listening(StepLog(every)) if every else contextlib.nullcontext()

    def task_done(self, progress: Progress) -> None:
        """Log the newest accuracy-matrix row and retention scores (before training too, after the first task)."""
        step = progress.tasks_done
        if step == 1:
            self._log(_finite({f"retained/{p}": curve[0] for p, curve in progress.retained.items()}), 0)
        row = {f"accuracy/task_{j}": value for j, value in enumerate(progress.matrix[-1])}
        retained = {f"retained/{p}": curve[step] for p, curve in progress.retained.items() if len(curve) > step}
        self._log(_finite({**row, **retained}), step)

    def finish(self, result: Mapping[str, Any], result_file: Path) -> None:
        """Log the final numbers, store the result file and close every sink; a sink that fails here warns (the
        result is already written) instead of failing the run."""
        final = final_values(result) if result.get("status") == STATUS_OK else {}
        if final:
            self._log(final, len(result["accuracy_matrix"]))
        for name, sink in self.sinks:
            try:
                sink.finish(result_file, result.get("status", "failed"), final)
            except Exception as error:  # noqa: BLE001  (a tracker outage must not lose the written result)
                warnings.warn(f"tracking sink {name} could not close run {self.spec.run_id}: {error}")

    def _log(self, values: Mapping[str, float], step: int) -> None:
        for _, sink in self.sinks:
            sink.log(values, step)
