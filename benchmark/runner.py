"""One run: a strategy trained through a stream on a backbone with one seed, evaluated after every task.

After each task the runner fills a row of the accuracy matrix (every task's test set, future tasks included) and
scores retention on the pre-training domain; before the first task it scores retention once more. Evaluation is
gradient-free, in eval mode and batched; test sets are turned into tensors once per run.
"""

from __future__ import annotations

import copy
import functools
import json
import random
import time
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch

from benchmark import costs, diagnostics
from benchmark.backbones import Backbone, build_backbone
from benchmark.checkpoints import Progress, resume, save_checkpoint
from benchmark.datasets.fingerprints import forget_file_digests
from benchmark.errors import RunDiverged
from benchmark.evaluation import StrategyFeatures, TestSets
from benchmark.metrics import matrix_metrics, summarize
from benchmark.recipe import input_pipeline, recipe_block
from benchmark.results import STATUS_OK, SCHEMA_VERSION, RunSpec
from benchmark.retention import build_retention
from benchmark.runtime import Runtime
from benchmark.sharing import MEMO, use_store
from benchmark.streams import Stream, build_stream, joint_task
from benchmark.streams.base import CLASS_INCREMENTAL
from benchmark.tracking.steps import current_step_log
from strategies.base import build_strategy


@functools.lru_cache(maxsize=8)
def _shared_stream(name: str, seed: int, image_spec: Any, params: str, runtime: Runtime) -> tuple[Stream, TestSets]:
    stream = build_stream(name, seed, image_spec=image_spec, **json.loads(params))
    return stream, TestSets.of([task.test for task in stream.tasks], runtime)


def forget_shared() -> None:
    """Forget what this process shares between runs (streams and test sets, features, image files' digests): the next
    run starts cold, as in a fresh process (a benchmark's timed repeats)."""
    _shared_stream.cache_clear()
    MEMO.clear()
    forget_file_digests()


def stream_and_tests(spec: RunSpec, backbone: Backbone, runtime: Runtime) -> tuple[Stream, TestSets]:
    """The run's stream (its images prepared by the run's input pipeline, benchmark/recipe.py) and its test sets, built
    once per process for all runs of the same stream, seed and pipeline when sharing (streams and decoded test sets
    are never modified)."""
    params = json.dumps(spec.stream_params, sort_keys=True)
    image_spec = input_pipeline(spec.strategy_params).image_spec(backbone.image_spec)
    if runtime.share:
        return _shared_stream(spec.stream, spec.order_seed, image_spec, params, runtime)
    return _shared_stream.__wrapped__(spec.stream, spec.order_seed, image_spec, params, runtime)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _clock(runtime: Runtime) -> float:
    if runtime.device.type == "cuda":
        torch.cuda.synchronize(runtime.device)
    return time.perf_counter()


def run(spec: RunSpec, runtime: Runtime, backbone: Optional[Backbone] = None,
        checkpoint: Optional[Path] = None, on_task: Optional[Callable[[Progress], None]] = None) -> dict[str, Any]:
    """Execute `spec` and return its result (status ok); exceptions propagate to the caller. With `checkpoint`, the
    state after each task is saved there, and a checkpoint left by an interrupted run is resumed from. `on_task`
    (experiment tracking) sees the progress after each task, once it is checkpointed."""
    started = _clock(runtime)
    use_store(runtime.store if runtime.share else None, runtime.store_limit_bytes)
    costs.reset_peak_memory(runtime.device)
    backbone = backbone or build_backbone(spec.backbone, **spec.backbone_params)
    stream, tests = stream_and_tests(spec, backbone, runtime)
    retention = build_retention(spec.retention, backbone, runtime)
    units = [task.labels for task in stream.tasks]

    seed_everything(spec.training_seed)
    strategy = build_strategy(spec.strategy, spec.strategy_params, copy.deepcopy(backbone.model), runtime)
    reference = {f"backbone.{name}": value for name, value in backbone.model.state_dict().items()}
    progress = resume(checkpoint, spec.run_id, strategy, reference) if checkpoint else None
    if progress is None:
        strategy.eval()
        before = retention(StrategyFeatures(strategy, runtime))
        progress = Progress(retained={name: [value] for name, value in before.items()})
    # a joint upper bound trains once on every task's data; its one evaluation fills every row (docs/strategies/index.md)
    tasks, repeats = ((joint_task(stream),), len(stream.tasks)) if strategy.joint else (stream.tasks, 1)
    remaining = tasks[progress.tasks_done // repeats:]
    step_log = current_step_log()  # per-step tracking: its step goes on from the checkpoint's
    if step_log is not None:
        step_log.step = progress.train_steps
    for task in runtime.bar(remaining, desc=f"{spec.strategy} on {spec.stream}", total=len(remaining)):
        start = _clock(runtime)
        try:
            strategy.train_task(task)
        except RunDiverged as diverged:
            raise RunDiverged(diverged.step, diverged.epoch, task.index) from None
        progress.train_s.append(_clock(runtime) - start)
        progress.train_steps = step_log.step if step_log is not None else progress.train_steps
        start = _clock(runtime)
        strategy.eval()
        features = StrategyFeatures(strategy, runtime)
        logits = tests.logits(strategy, features, runtime)
        seen = task.index if repeats == 1 else len(stream.tasks) - 1  # the last task seen (joint: all of them)
        progress.matrix.extend([diagnostics.accuracy_row(logits, tests.labels, tests.sizes)] * repeats)
        after = diagnostics.after_task(logits, tests.labels, tests.sizes, units, seen)
        if strategy.selects_task:
            after["task_selection_acc"] = diagnostics.task_selection_acc(
                tests.outputs(strategy.selected_task, runtime), tests.sizes, seen)
        progress.diagnostics.extend([after] * repeats)
        progress.confusion = diagnostics.confusion_entries(logits, tests.labels)
        if strategy.task_aware:
            progress.task_aware_matrix.extend([tests.task_aware_accuracies(strategy.predict, runtime)] * repeats)
        for name, value in retention(features).items():
            progress.retained[name].extend([value] * repeats)
        progress.eval_s.append(_clock(runtime) - start)
        if checkpoint:
            save_checkpoint(checkpoint, spec.run_id, strategy, progress, reference)
        if on_task:
            on_task(progress)

    matrix, retained = progress.matrix, progress.retained
    test_sizes = list(tests.sizes)
    evaluated = sum(test_sizes) + len(retention.eval_set.labels)  # images scored at each evaluation point
    cost = {**costs.parameter_counts(strategy), "flops_per_image": costs.flops_per_image(strategy, tests.first_image()),
            "train_s": progress.train_s, "eval_s": progress.eval_s, "wall_time_s": _clock(runtime) - started,
            "threads": torch.get_num_threads(),
            **costs.throughput(sum(len(task.train) for task in tasks), progress.train_s, evaluated, progress.eval_s),
            **costs.peak_memory_mb(runtime.device)}
    extra = strategy.report()
    found, diagnosed = diagnostics.run_diagnostics(progress.diagnostics, matrix, test_sizes, units, progress.confusion)
    metrics = {**summarize(matrix, test_sizes, retained), **diagnosed, **extra.pop("metrics", {})}
    if strategy.task_aware:
        extra["accuracy_matrix_task_aware"] = progress.task_aware_matrix
        metrics["task_aware"] = matrix_metrics(progress.task_aware_matrix, test_sizes)
    return {
        **_identity(spec, stream),
        "test_sizes": test_sizes,
        "accuracy_matrix": matrix,
        "metrics": metrics,
        "diagnostics": found,
        "cost": cost,
        "retention_protocols": list(retention.scorers),
        "retention_eval": {"dataset": retention.eval_set.name, "size": len(retention.eval_set.labels)},
        "joint_upper_bound": strategy.joint,
        "recipe": recipe_block(spec.strategy_params, spec.precision, class_order(spec, stream), strategy.recipe()),
        "runtime": runtime.record(),
        **extra,
    }


def class_order(spec: RunSpec, stream: Stream) -> str:
    """How the stream ordered its classes, for the run's recipe: seeded (a permutation drawn from the result's
    `class_order_seed`), natural (the data set's own order) or none (a domain-incremental stream)."""
    if stream.scenario != CLASS_INCREMENTAL:
        return "none"
    return "natural" if spec.stream_params.get("shuffle") is False else "seeded"


def _identity(spec: RunSpec, stream: Stream) -> dict[str, Any]:
    """What was run: the spec and the stream as it was built (class order, task names and classes; for a folder
    benchmark, the digest of the image files it read)."""
    return {
        "schema_version": SCHEMA_VERSION,
        "run_id": spec.run_id,
        "status": STATUS_OK,
        "stream": spec.stream,
        "strategy": spec.strategy,
        "strategy_params": dict(spec.strategy_params),
        "backbone": spec.backbone,
        "backbone_params": dict(spec.backbone_params),
        "seed": spec.seed,
        "class_order_seed": spec.order_seed,
        "train_seed": spec.training_seed,
        "scenario": stream.scenario,
        "class_order": list(stream.class_order),
        "task_names": [task.name for task in stream.tasks],
        "task_classes": [list(task.classes) for task in stream.tasks],
        **({"manifest_sha256": stream.manifest_sha256} if stream.manifest_sha256 else {}),
        "config": spec.as_dict(),
    }
