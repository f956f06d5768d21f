"""One run: a strategy trained through a stream on a backbone with one seed, evaluated after every task.

After each task the runner fills a row of the accuracy matrix (every task's test set, future tasks included) and
scores retention on the pre-training domain; before the first task it scores retention once more. Evaluation is
gradient-free, in eval mode and batched; test sets are turned into tensors once per run.
"""

from __future__ import annotations

import copy
import random
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from benchmark import costs
from benchmark.backbones import Backbone, build_backbone
from benchmark.checkpoints import Progress, resume, save_checkpoint
from benchmark.errors import RunDiverged
from benchmark.evaluation import TestSets
from benchmark.metrics import matrix_metrics, summarize
from benchmark.results import STATUS_OK, SCHEMA_VERSION, RunSpec
from benchmark.retention import build_retention
from benchmark.runtime import Runtime
from benchmark.streams import Stream, build_stream
from strategies.base import build_strategy


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _clock(runtime: Runtime) -> float:
    if runtime.device.type == "cuda":
        torch.cuda.synchronize(runtime.device)
    return time.perf_counter()


def run(spec: RunSpec, runtime: Runtime, backbone: Optional[Backbone] = None,
        checkpoint: Optional[Path] = None) -> dict[str, Any]:
    """Execute `spec` and return its result (status ok); exceptions propagate to the caller. With `checkpoint`, the
    state after each task is saved there, and a checkpoint left by an interrupted run is resumed from."""
    started = _clock(runtime)
    costs.reset_peak_memory(runtime.device)
    backbone = backbone or build_backbone(spec.backbone, **spec.backbone_params)
    stream = build_stream(spec.stream, spec.seed, image_spec=backbone.image_spec, **spec.stream_params)
    retention = build_retention(spec.retention, backbone, runtime)
    tests = TestSets.of([task.test for task in stream.tasks], runtime)

    seed_everything(spec.seed)
    strategy = build_strategy(spec.strategy, spec.strategy_params, copy.deepcopy(backbone.model), runtime)
    reference = {f"backbone.{name}": value for name, value in backbone.model.state_dict().items()}
    progress = resume(checkpoint, spec.run_id, strategy, reference) if checkpoint else None
    if progress is None:
        strategy.eval()
        progress = Progress(retained={name: [value] for name, value in retention(strategy).items()})
    remaining = stream.tasks[progress.tasks_done:]
    for task in runtime.bar(remaining, desc=f"{spec.strategy} on {spec.stream}", total=len(remaining)):
        start = _clock(runtime)
        try:
            strategy.train_task(task)
        except RunDiverged as diverged:
            raise RunDiverged(diverged.step, diverged.epoch, task.index) from None
        progress.train_s.append(_clock(runtime) - start)
        start = _clock(runtime)
        strategy.eval()
        progress.matrix.append(tests.accuracies(strategy.predict, runtime))
        if strategy.task_aware:
            progress.task_aware_matrix.append(tests.task_aware_accuracies(strategy.predict, runtime))
        for name, value in retention(strategy).items():
            progress.retained[name].append(value)
        progress.eval_s.append(_clock(runtime) - start)
        if checkpoint:
            save_checkpoint(checkpoint, spec.run_id, strategy, progress, reference)

    matrix, retained = progress.matrix, progress.retained
    test_sizes = list(tests.sizes)
    cost = {**costs.parameter_counts(strategy), "flops_per_image": costs.flops_per_image(strategy, tests.first_image()),
            "train_s": progress.train_s, "eval_s": progress.eval_s, "wall_time_s": _clock(runtime) - started,
            **costs.peak_memory_mb(runtime.device)}
    extra = strategy.report()
    metrics = {**summarize(matrix, test_sizes, retained), **extra.pop("metrics", {})}
    if strategy.identifies_tasks:
        shares = tests.task_identification(strategy.identify_task, runtime)
        metrics["task_id_accuracy"] = sum(s * n for s, n in zip(shares, test_sizes)) / sum(test_sizes)
        metrics["task_id_accuracy_per_task"] = shares
    if strategy.task_aware:
        extra["accuracy_matrix_task_aware"] = progress.task_aware_matrix
        metrics["task_aware"] = matrix_metrics(progress.task_aware_matrix, test_sizes)
    return {
        **_identity(spec, stream),
        "test_sizes": test_sizes,
        "accuracy_matrix": matrix,
        "metrics": metrics,
        "cost": cost,
        "retention_protocols": list(retention.scorers),
        "retention_eval": {"dataset": retention.eval_set.name, "size": len(retention.eval_set.labels)},
        **extra,
    }


def _identity(spec: RunSpec, stream: Stream) -> dict[str, Any]:
    """What was run: the spec and the stream as it was built (class order, task names and classes)."""
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
        "scenario": stream.scenario,
        "class_order": list(stream.class_order),
        "task_names": [task.name for task in stream.tasks],
        "task_classes": [list(task.classes) for task in stream.tasks],
        "config": spec.as_dict(),
    }
