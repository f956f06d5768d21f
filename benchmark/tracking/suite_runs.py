"""The suite's own tracked run: one parent run per results folder, opened before the workers start, closed with the
report as its artifacts.

`open_suite` runs in the suite's process, under the results folder's lock, before any worker opens a run: each sink
creates what its runs share (MLflow: the experiment and the parent run, named after the results folder), and the
parent's id travels to the workers inside the plan (`TrackingPlan.parents`; a plan is picklable), where each run
opens as its child. `<results>/tracking.json` keeps the parents' ids, so a resumed suite (the same command again)
reopens the same parent: the runs it skips as finished keep their child runs, the runs it resumes from a checkpoint
reopen theirs (`tracker.py`), and only runs that start afresh add children. `finish_suite` stores the report's files
with the parent and closes it, FAILED if a run failed (W&B, which has no parent runs, stores them in a report run of
the suite's group: `wandb_sink.py`).
"""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

from benchmark.results import write_json_atomic
from benchmark.tracking.base import TrackingPlan
from benchmark.tracking.tracker import IDS_FILE, stored_ids


def open_suite(plan: TrackingPlan, out_dir: Path) -> TrackingPlan:
    """Every sink's shared state (`SinkParams.prepare`), created once before the runs start; the plan with the
    parent runs' ids, which are also written to `<out_dir>/tracking.json` (nothing is written without sinks)."""
    if not plan.sinks:
        return plan
    stored = stored_ids(out_dir / IDS_FILE)
    parents = {name: params.prepare(plan.context(out_dir, name), stored.get(name, "")) for name, params in plan.sinks}
    write_json_atomic(out_dir / IDS_FILE, {name: run_id for name, run_id in parents.items() if run_id})
    return dataclasses.replace(plan, parents=tuple(parents.items()))


def finish_suite(plan: TrackingPlan, out_dir: Path, files: list[Path], status: str) -> None:
    """Store the report's files with every sink's parent run and close it; a sink that fails warns (the report is
    written already) instead of failing the suite."""
    for name, params in plan.sinks:
        try:
            params.finish_suite(plan.context(out_dir, name), files, status)
        except Exception as error:  # noqa: BLE001  (a tracker outage must not turn a finished suite into an error)
            warnings.warn(f"tracking sink {name} could not store the report with the suite's run: {error}")
