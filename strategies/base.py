"""The strategy contract and registry.

A strategy receives the pre-trained backbone (its pre-training classifier already removed, so `backbone(x)` gives
pre-logit features) and its validated hyper-parameters. It implements `train_task(task)` and
`predict(x, task_id=None)`; the runner does everything else (evaluation, retention, costs). Costs are measured
centrally from the strategy's modules: trainable = parameters with `requires_grad`; added = parameters and buffers
the strategy holds that were not in the pre-trained backbone (new heads, adapters, per-task state).

Evaluations that cannot differ are shared (`benchmark.sharing`): the runner keys a strategy's features by
`feature_key()`, a digest of its modules' tensors and settings plus `feature_identity()` (by default its class and
configuration: a strategy whose `features` reads state other than its modules' must keep that default or say more).
Strategies whose runs compute some of the same features on a stream (a frozen pre-trained backbone's, a frozen
query's) name one sharing family in `shares_with`, and executors with worker processes run such runs in one process.

Adding a strategy: one file, one class with a `Config` dataclass, one `@register("name")`.
"""

from __future__ import annotations

import abc
from itertools import chain
from typing import Any, Callable, ClassVar, Mapping, Optional

import torch
from torch import nn

from benchmark.config import make_config
from benchmark.registry import Registry
from benchmark.runtime import Runtime
from benchmark.sharing import module_fingerprint
from benchmark.streams import Task

STRATEGIES: Registry[type["Strategy"]] = Registry("strategy")
RECIPE_FIELDS = ("optimizer", "lr", "batch_size", "epochs", "schedule", "grad_clip", "drop_last", "head_init")
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

    @property
    def joint(self) -> bool:
        """True: a joint-training upper bound (config `joint: true`). The runner then trains it once, on one task
        holding every task's training data (`benchmark.streams.joint_task`), and scores it on every task's test set."""
        return bool(getattr(self.config, "joint", False))

    task_aware: ClassVar[bool] = False  # True: `predict(x, task_id)` differs, and the runner also scores that mode
    classifies_features: ClassVar[bool] = False  # True: predict(x) == classify(features(x)) (task-agnostic)
    feature_free: ClassVar[tuple[str, ...]] = ()  # submodules / tensors that `features` never reads (e.g. "head")

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        """Logits from `features(x)`, for strategies with `classifies_features` (then the runner reuses features
        that cannot have changed, such as a frozen backbone's, instead of running `predict` on the images)."""
        raise NotImplementedError(f"{type(self).__name__} does not classify features")

    def frozen_stage(self) -> Optional[tuple[Callable[[torch.Tensor], torch.Tensor], str,
                                             Callable[[torch.Tensor], torch.Tensor]]]:
        """(prefix, its key, rest) with features(x) == rest(prefix(x)) and a prefix that does not train, so the
        runner can keep the prefix's outputs on evaluation images across evaluations; None (the default): no such
        cut. The key is a fingerprint of everything the prefix depends on (`benchmark.sharing`)."""
        return None

    def feature_identity(self) -> str:
        """What decides `features` beyond the modules' tensors and settings: by default the class and configuration,
        so only runs of the same method and settings share features; '' when the modules alone decide them."""
        return f"{type(self).__module__}.{type(self).__qualname__}:{self.config!r}"

    def feature_key(self) -> str:
        """A digest of everything `features` depends on: equal keys, equal features (`benchmark.sharing`)."""
        return module_fingerprint(self, self.feature_identity(), self.feature_free)
    shares_with: ClassVar[str] = ""  # a sharing family: runs of its strategies compute some of the same features

    selects_task: ClassVar[bool] = False  # True: `selected_task(x)` names the task-specific part each image uses

    def selected_task(self, x: torch.Tensor) -> torch.Tensor:
        """For a strategy that picks a task-specific part per image at test time, without being told the task (the
        prompts a query selects, a per-task expert or adapter chosen by a router): the index of the task whose part
        each image gets, a tensor of shape (n,). With `selects_task = True` the runner scores it against each test
        image's own task after every task (`diagnostics.task_selection_acc`). Selective LoRA does not fill it: its
        task-aware mode is given the task id and its task-agnostic mode applies every task's blocks at once, so it
        selects nothing."""
        raise NotImplementedError(f"{type(self).__name__} selects no task-specific part (selects_task is False)")

    def report(self) -> dict[str, Any]:
        """What the strategy adds to its run's result (keys of `metrics` merge into the result's metrics)."""
        return {}

    def recipe(self) -> dict[str, Any]:
        """The training recipe around the mechanism, for the result's `recipe` block (benchmark/recipe.py adds the
        input pipeline, precision and class order): by default the optimiser, schedule, gradient clipping and head
        initialisation of the shared-loop configuration the strategy trains with (`config.train_config()` where it
        has one, else the configuration itself), as far as it has them."""
        train = self.config.train_config() if hasattr(self.config, "train_config") else self.config
        return {key: getattr(train, key) for key in RECIPE_FIELDS if hasattr(train, key)}

    def prepare_to_load(self, state: Mapping[str, torch.Tensor]) -> None:
        """Build the modules a checkpoint's `state` holds that a fresh strategy lacks (per-task modules); most
        strategies build everything in `__init__` and need nothing here."""


def build_strategy(name: str, params: Mapping[str, Any], backbone: nn.Module, runtime: Runtime) -> Strategy:
    """The registered strategy `name` (or `name@label`) on `backbone`, its hyper-parameters validated first."""
    cls = STRATEGIES.get(name)
    return cls(backbone, strategy_config(name, params), runtime)


def strategy_config(name: str, params: Mapping[str, Any]) -> Any:
    """Validate a strategy's hyper-parameters without building it."""
    return make_config(STRATEGIES.get(name).Config, params, f"strategies.{name}")
