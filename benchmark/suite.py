"""The grid backbones x streams x strategies x seeds: plan, check, run, resume.

Everything the user gave is validated, and every backbone, stream and pre-training eval set is loaded once,
before any training or any file is written: a typo or a missing data set fails in seconds, not after hours.
Finished runs (result status `ok`) are skipped; a run that raises is recorded as `failed` with its traceback and
the suite goes on, unless the results folder itself cannot take its files (`benchmark.safe_io.FolderError`: a full
disk, a link planted in it), which stops the suite with one line. An interrupt (Ctrl-C, SIGTERM) stops the executor's
workers before the folder's lock is released.
"""

from __future__ import annotations

import contextlib
import copy
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from benchmark.backbones import Backbone, backbone_params, build_backbone
from benchmark.config import SuiteConfig, config_dict, retention_dict
from benchmark.checkpoints import CHECKPOINT_FILE, check_checkpoint
from benchmark.errors import RunDiverged
from benchmark.executors import EXECUTORS
from benchmark.results import (FINAL_STATUSES, SCHEMA_VERSION, STATUS_DIVERGED, STATUS_FAILED, STATUS_OK, RunSpec,
                               previous_result, result_path, results_lock, run_folder, versions, write_json_atomic)
from benchmark.retention import build_retention, protocol_params
from benchmark.plugins import load_plugins
from benchmark.published import write_published
from benchmark.recipe import input_pipeline, run_precision
from benchmark.runner import run
from benchmark.runtime import Runtime
from benchmark.safe_io import FolderError, UnsafePathError, real_folder, remove_partials, require_file_slot
from benchmark.streams import build_stream, stream_params
from benchmark.tracking import Tracker, TrackingPlan, open_suite, plan_tracking
from strategies.base import STRATEGIES, build_strategy, strategy_config


@dataclass
class SuiteOutcome:
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    diverged: list[str] = field(default_factory=list)
    tracking: TrackingPlan = TrackingPlan()  # with the suite's parent runs, for `benchmark.tracking.finish_suite`


def plan_runs(config: SuiteConfig, runtime: Runtime) -> list[RunSpec]:
    """Validate every component's hyper-parameters and expand the grid into run specs (each at its strategy's
    precision where the strategy sets one, `benchmark.recipe`, else the suite's)."""
    retention = retention_dict(config.retention, protocol_params)
    backbones = [(b.name, config_dict(backbone_params(b.name, b.params))) for b in config.backbones]
    streams = [(s.name, config_dict(stream_params(s.name, s.params))) for s in config.streams]
    strategies = [(s.name, config_dict(strategy_config(s.name, s.params))) for s in config.strategies]
    return [
        RunSpec(stream, s_params, strategy, st_params, backbone, b_params, seed, retention,
                runtime.device.type, run_precision(st_params, runtime.precision), config.class_order_seed,
                config.train_seed)
        for backbone, b_params in backbones
        for stream, s_params in streams
        for strategy, st_params in strategies
        for seed in config.seeds
    ]


def preflight(specs: list[RunSpec], runtime: Runtime) -> dict[str, Backbone]:
    """Load every backbone, its retention data and every stream once, and build every strategy on its backbone, so
    missing data or a strategy that does not fit its backbone fails before training."""
    backbones: dict[str, Backbone] = {}
    for spec in specs:
        if spec.backbone not in backbones:
            backbones[spec.backbone] = build_backbone(spec.backbone, **spec.backbone_params)
            build_retention(spec.retention, backbones[spec.backbone], runtime)
    built = set()
    for spec in specs:
        key = (spec.strategy, repr(sorted(spec.strategy_params.items())), spec.backbone)
        if key not in built:
            build_strategy(spec.strategy, spec.strategy_params, copy.deepcopy(backbones[spec.backbone].model),
                           runtime)
            built.add(key)
    checked = set()
    for spec in specs:
        image_spec = input_pipeline(spec.strategy_params).image_spec(backbones[spec.backbone].image_spec)
        key = (spec.stream, repr(sorted(spec.stream_params.items())), image_spec)
        if key not in checked:
            build_stream(spec.stream, spec.order_seed, image_spec=image_spec, **spec.stream_params)
            checked.add(key)
    return backbones


def unfinished_result(spec: RunSpec, error: BaseException) -> dict[str, Any]:
    """The record of a run that raised: `diverged` (with where) for a non-finite loss, `failed` for anything else."""
    diverged = isinstance(error, RunDiverged)
    extra = {"diverged_at": {"task": error.task, "step": error.step, "epoch": error.epoch}} if diverged else {}
    return {
        **extra,
        "schema_version": SCHEMA_VERSION,
        "run_id": spec.run_id,
        "status": STATUS_DIVERGED if diverged else STATUS_FAILED,
        "stream": spec.stream,
        "strategy": spec.strategy,
        "backbone": spec.backbone,
        "seed": spec.seed,
        "error": f"{type(error).__name__}: {error}",
        "traceback": traceback.format_exc(),
        "config": spec.as_dict(),
    }


@dataclass(frozen=True)
class RunJob:
    """One run as an executor ships it: picklable, self-contained."""

    spec: RunSpec
    out_dir: Path
    runtime: Runtime
    keep_checkpoints: bool = False
    tracking: TrackingPlan = TrackingPlan()  # experiment-tracking sinks (benchmark/tracking/); none by default
    imports: tuple[str, ...] = ()  # plugin modules every process running this job imports (benchmark/plugins.py)

    @property
    def share_group(self) -> str:
        """Runs that compute some of the same features: one backbone, stream and pair of seeds, and strategies of one
        sharing family (`Strategy.shares_with`; a strategy without one is a group of its own). Executors with worker
        processes run a group in one process, where the memo (`benchmark.sharing`) serves all of its runs."""
        spec = self.spec
        family = STRATEGIES.get(spec.strategy).shares_with or spec.run_id
        return repr((spec.backbone, sorted(spec.backbone_params.items()), spec.stream,
                     sorted(spec.stream_params.items()), spec.order_seed, spec.training_seed, family))


def execute(job: RunJob, backbone: Optional[Backbone] = None) -> str:
    """Run one spec and write its result file (ok, diverged or failed); returns the status. The same function runs
    in this process, in a worker process, in a Ray task or in a SLURM job, so every executor writes the same files."""
    import strategies  # noqa: F401  (a fresh worker process registers the built-in strategies and entry points)

    load_plugins(job.imports)

    checkpoint = run_folder(job.out_dir, job.spec.run_id) / CHECKPOINT_FILE
    tracker = Tracker(job.tracking, job.spec, job.out_dir, checkpoint.parent)
    try:
        tracker.start(resuming=checkpoint.is_file())
        with tracker.training():  # per-step loss and lr from the shared loop, when a sink takes them
            result = run(job.spec, job.runtime, backbone, checkpoint, tracker.task_done)
    except FolderError:  # the folder cannot take the run's files (a full disk): no run's fault, stop the suite
        raise
    except Exception as error:  # a failing or diverging run is recorded; the suite goes on
        result = unfinished_result(job.spec, error)
    write_json_atomic(result_path(job.out_dir, job.spec.run_id), {**result, "versions": versions()})
    tracker.finish(result, result_path(job.out_dir, job.spec.run_id))
    if result["status"] == STATUS_OK:
        from reports.plots import write_run_plots  # the report layer draws; imported late (matplotlib)

        write_run_plots(result, result_path(job.out_dir, job.spec.run_id).parent)
    if result["status"] in FINAL_STATUSES and not job.keep_checkpoints:
        checkpoint.unlink(missing_ok=True)
    return result["status"]


def to_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def run_suite(config: SuiteConfig, out_dir: Path, runtime: Runtime, keep_checkpoints: bool = False,
              notify: Callable[[str], None] = to_stderr,
              finished: Callable[[RunSpec, str, Path], None] = lambda spec, status, path: None) -> SuiteOutcome:
    """Run every spec not finished yet on the chosen executor; per-task checkpoints let an interrupted run resume,
    and are removed once its result is written unless `keep_checkpoints`. A stored result or checkpoint that does
    not check out is not trusted: the run goes again, and `notify` gets one line naming the file and why.
    `finished(spec, status, result path)` is called as each run ends, in the order they end."""
    load_plugins(config.imports)
    specs = plan_runs(config, runtime)
    tracking = plan_tracking(config)
    executor = EXECUTORS.get(config.executor.name)
    backbones = preflight(specs, runtime)
    outcome = SuiteOutcome()
    with results_lock(out_dir):
        remove_partials(out_dir)
        runtime = runtime.with_store(feature_store_folder(config, out_dir), config.cache.limit_bytes)
        write_published(out_dir, config.published)
        tracking = open_suite(tracking, out_dir)  # once, before any worker opens a tracked run (docs/safety.md)
        outcome.tracking = tracking
        todo = []
        for spec in specs:
            remove_partials(run_folder(out_dir, spec.run_id))
            result, distrusted = previous_result(out_dir, spec)
            if result is not None and result["status"] in FINAL_STATUSES:
                outcome.skipped.append(spec.run_id)
                continue
            require_file_slot(result_path(out_dir, spec.run_id))  # a folder there fails now, not after training
            if distrusted:
                notify(f"rerunning {spec.run_id}: {distrusted}")
            discard_foreign_checkpoint(result_path(out_dir, spec.run_id).with_name(CHECKPOINT_FILE), spec, notify)
            todo.append(RunJob(spec, out_dir, runtime.with_precision(spec.precision), keep_checkpoints, tracking,
                               config.imports))
        notify(runtime.precision_line())  # once, as training starts (a strategy's recipe may fix its own)
        # closing: an interrupt between two statuses still runs the executor's cleanup (its workers stopped and
        # waited for) before the lock is released
        with contextlib.closing(executor(todo, execute, backbones, config.executor)) as statuses:
            for job, status in runtime.bar(statuses, desc="runs", total=len(todo), leave=True):
                {STATUS_OK: outcome.ran, STATUS_DIVERGED: outcome.diverged}.get(status, outcome.failed).append(
                    job.spec.run_id)
                finished(job.spec, status, result_path(out_dir, job.spec.run_id))
    return outcome


def feature_store_folder(config: SuiteConfig, out_dir: Path) -> Optional[Path]:
    """The persistent feature store's folder (benchmark/feature_store.py), None without sharing or cache. The default,
    inside the results folder, must be a real folder there (a planted link would lead the store's writes out)."""
    folder = config.cache.folder_for(out_dir) if config.share else None
    if folder is None or folder != out_dir / "cache" / "features":
        return folder
    return real_folder(out_dir, "cache", "features")


def discard_foreign_checkpoint(path: Path, spec: RunSpec, notify: Callable[[str], None]) -> None:
    """Remove a checkpoint the run must not resume from (unreadable, another run's, another code version's)."""
    distrusted = check_checkpoint(path, spec.run_id)
    if distrusted:
        try:
            path.unlink()  # a link is removed, not what it points to
        except IsADirectoryError:
            raise UnsafePathError(f"{path} is a folder where the run keeps its checkpoint; remove it or pass another "
                                  "--out") from None
        notify(f"restarting {spec.run_id} from its first task: {path} {distrusted}; removed it")
