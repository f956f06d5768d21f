"""`run_suite.py --dry-run`: check everything a config names and size every planned run, without training.

Checked: every component's hyper-parameters (through its registry, as a real suite does), every strategy built on
its backbone, and the data: each backbone's weights loaded, its pre-training eval set found, each stream built
(with downloads switched off: a missing data set whose stream may download it is reported as downloading at run
time, one that may not is the one-line error the run would give). Sized: trainable and total parameters and
inference FLOPs per image of each strategy as built, before its first task (strategies that add modules per task,
selective LoRA's blocks and LAE's offline expert, add them when training starts), and the classifier head the
stream's classes will need. A strategy is sized once per backbone and settings, however many streams and seeds
run it.

Tests size the shipped configs without their data and weights (`check_data=False`: random weights, nothing read);
the command line always checks.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import Any, Optional

import torch

from benchmark import costs
from benchmark.backbones import Backbone, build_backbone
from benchmark.config import SuiteConfig
from benchmark.errors import DatasetMissingError
from benchmark.plugins import load_plugins
from benchmark.recipe import input_pipeline
from benchmark.results import RunSpec
from benchmark.retention import build_retention
from benchmark.runtime import Runtime
from benchmark.streams import build_stream
from benchmark.suite import plan_runs
from benchmark.tracking import plan_tracking
from strategies.base import build_strategy

PRESENT, DOWNLOADS, UNCHECKED = "present", "downloads at run time", "not checked"
Sizes = dict[str, tuple[int, int, int, int]]  # a strategy on a backbone -> trainable, total, feature dim, FLOPs


@dataclass(frozen=True)
class PlannedRun:
    spec: RunSpec
    params_trainable: int  # as built, before the first task and its head
    params_total: int
    head_params: Optional[int]  # a linear head over all the stream's classes; None when the stream was not built
    flops_per_image: int
    data: str  # the stream's data: present, downloads at run time, or not checked

    def row(self) -> dict[str, Any]:
        return {"backbone": self.spec.backbone, "stream": self.spec.stream, "strategy": self.spec.strategy,
                "seed": self.spec.seed, "trainable": f"{self.params_trainable:,}",
                "head": "?" if self.head_params is None else f"{self.head_params:,}",
                "total": f"{self.params_total:,}", "GFLOPs/image": f"{self.flops_per_image / 1e9:.2f}",
                "data": self.data}


def dry_run(config: SuiteConfig, runtime: Runtime, check_data: bool = True,
            sized: Optional[Sizes] = None, built: Optional[dict[str, Backbone]] = None) -> list[PlannedRun]:
    """Every run `config` plans, checked and sized; raises the UserInputError a real run would raise first.
    `sized`: sizes already counted (`size_run`), shared by several dry runs in one process (the tests'); `built`:
    backbones already built, shared the same way (only measured, never changed)."""
    load_plugins(config.imports)
    specs = plan_runs(config, runtime)
    plan_tracking(config)  # sink names, hyper-parameters, installed packages
    backbones: dict[str, Backbone] = {}
    built = {} if built is None else built
    classes: dict[tuple[str, str], Optional[int]] = {}
    data: dict[tuple[str, str], str] = {}
    for spec in specs:
        if spec.backbone not in backbones:
            name = json.dumps([spec.backbone, spec.backbone_params, check_data], sort_keys=True)
            if name not in built:
                built[name] = build_backbone(spec.backbone, weights=check_data, **spec.backbone_params)
            backbones[spec.backbone] = built[name]
            if check_data:  # as the preflight: every protocol built, its eval set and memory bank loaded
                build_retention(spec.retention, backbones[spec.backbone], runtime)
        key = (spec.stream, spec.backbone)
        if key not in data:
            data[key], classes[key] = stream_data(spec, backbones[spec.backbone]) if check_data else (UNCHECKED, None)
    sized = {} if sized is None else sized
    return [size_run(spec, backbones[spec.backbone], classes[(spec.stream, spec.backbone)],
                     data[(spec.stream, spec.backbone)], runtime, sized) for spec in specs]


def stream_data(spec: RunSpec, backbone: Backbone) -> tuple[str, Optional[int]]:
    """Whether the stream's data is on disk (building it, downloads off) and, if so, its number of classes."""
    may_download = bool(spec.stream_params.get("download", False))
    offline = {**spec.stream_params, "download": False} if may_download else dict(spec.stream_params)
    try:
        stream = build_stream(spec.stream, spec.order_seed, **offline,
                              image_spec=input_pipeline(spec.strategy_params).image_spec(backbone.image_spec))
    except DatasetMissingError:
        if may_download:
            return DOWNLOADS, None
        raise
    return PRESENT, len(stream.class_names)


def size_run(spec: RunSpec, backbone: Backbone, num_classes: Optional[int], data: str, runtime: Runtime,
             sized: Sizes) -> PlannedRun:
    """The run's parameters, head and FLOPs per image. A strategy is built and counted once per backbone
    architecture and strategy settings (`sized`: trainable, total, feature dimension, FLOPs): streams, seeds and
    weights do not change them."""
    key = json.dumps([spec.backbone, spec.backbone_params, spec.strategy, spec.strategy_params, spec.precision],
                     sort_keys=True)
    if key not in sized:
        strategy = build_strategy(spec.strategy, spec.strategy_params, copy.deepcopy(backbone.model), runtime)
        counts = costs.parameter_counts(strategy)
        image = torch.zeros(backbone.image_spec.input_size)
        sized[key] = (counts["params_trainable"], counts["params_total"], strategy.feature_dim,
                      costs.flops_per_image(strategy, image))
    trainable, total, feature_dim, flops = sized[key]
    head = None if num_classes is None else (feature_dim + 1) * num_classes
    return PlannedRun(spec, trainable, total, head, flops, data)


def plan_table(runs: list[PlannedRun]) -> str:
    from tabulate import tabulate

    return tabulate([run.row() for run in runs], headers="keys", tablefmt="github")
