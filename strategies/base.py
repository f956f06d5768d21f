"""The strategy contract and registry.

A strategy receives the pre-trained backbone (its pre-training classifier already removed, so `backbone(x)` gives
pre-logit features) and its validated hyper-parameters. It implements `train_task(task)` and
`predict(x, task_id=None)`; the runner does everything else (evaluation, retention, costs). Costs are measured
centrally from the strategy's modules: trainable = parameters with `requires_grad`; added = parameters and buffers
the strategy holds that were not in the pre-trained backbone (new heads, adapters, per-task state).

Adding a strategy: one file, one class with a `Config` dataclass, one `@register("name")`.
"""

from __future__ import annotations

import abc
from itertools import chain
from typing import Any, ClassVar, Mapping, Optional

import torch
from torch import nn

from benchmark.config import make_config
from benchmark.registry import Registry
from benchmark.runtime import Runtime
from benchmark.streams import Task

STRATEGIES: Registry[type["Strategy"]] = Registry("strategy")
register = STRATEGIES.register


class Strategy(nn.Module, abc.ABC):
    """A continual-learning method on a pre-trained backbone."""

    Config: ClassVar[type]  # hyper-parameters: a dataclass with defaults and validation

    def __init__(self, backbone: nn.Module, config: Any, runtime: Runtime) -> None:
        super().__init__()
        backbone.reset_classifier(0)  # timm contract: the pre-training head goes, backbone(x) = pre-logits
        self.backbone = backbone.to(runtime.device)
        self.config = config
        self.runtime = runtime
        self.pretrained_ids = frozenset(id(t) for t in chain(backbone.parameters(), backbone.buffers()))

    @property
    def feature_dim(self) -> int:
        return self.backbone.num_features

    @abc.abstractmethod
    def train_task(self, task: Task) -> None:
        """Learn `task`; afterwards `predict` covers every class seen so far."""

    @abc.abstractmethod
    def predict(self, x: torch.Tensor, task_id: Optional[int] = None) -> torch.Tensor:
        """Logits over all classes seen so far; `task_id` is given only in task-aware evaluation."""

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pre-logit features of the current network (what retention protocols score with the original head)."""
        return self.backbone(x)

    task_aware: ClassVar[bool] = False  # True: `predict(x, task_id)` differs, and the runner also scores that mode

    identifies_tasks: ClassVar[bool] = False  # True: `identify_task(x)` says which task each image's prompt is from

    def identify_task(self, x: torch.Tensor) -> torch.Tensor:
        """The task index each image of `x` is assigned to by the strategy's own selection (prompt methods); the
        runner reports the share of test images assigned to their own task (`metrics.task_id_accuracy`)."""
        raise NotImplementedError(f"{type(self).__name__} does not identify tasks")

    def report(self) -> dict[str, Any]:
        """What the strategy adds to its run's result (keys of `metrics` merge into the result's metrics)."""
        return {}

    def prepare_to_load(self, state: Mapping[str, torch.Tensor]) -> None:
        """Build the modules a checkpoint's `state` holds that a fresh strategy lacks (per-task modules); most
        strategies build everything in `__init__` and need nothing here."""


def build_strategy(name: str, params: Mapping[str, Any], backbone: nn.Module, runtime: Runtime) -> Strategy:
    cls = STRATEGIES.get(name)
    return cls(backbone, strategy_config(name, params), runtime)


def strategy_config(name: str, params: Mapping[str, Any]) -> Any:
    """Validate a strategy's hyper-parameters without building it."""
    return make_config(STRATEGIES.get(name).Config, params, f"strategies.{name}")
