"""Linear probing: the backbone is frozen; only a growing linear head trains.

The no-forgetting end of the trade-off: the pre-trained features are untouched, so retention on the pre-training
domain is exactly the backbone's. Loss: cross-entropy over the current task's classes by default (`loss: local`),
or over all classes seen (`loss: global`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from benchmark.streams import Task
from strategies._heads import GrowingClassifier
from strategies._loop import TrainConfig, fit, precompute, task_cross_entropy
from strategies.base import Strategy, register


@dataclass(frozen=True)
class LinearConfig(TrainConfig):
    lr: float = 1e-2  # only a head trains: a larger lr than fine-tuning


@register("linear")
class LinearProbe(Strategy):
    Config = LinearConfig

    def __init__(self, backbone, config: LinearConfig, runtime) -> None:
        super().__init__(backbone, config, runtime)
        self.backbone.requires_grad_(False)
        self.head = GrowingClassifier(self.feature_dim).to(runtime.device)

    def train_task(self, task: Task) -> None:
        self.head.grow(task.num_outputs)
        self.backbone.eval()
        self.head.train()
        features = precompute(self.features, task.train, self.runtime)  # the backbone is frozen, in eval mode
        loss = lambda f, y: task_cross_entropy(self.head(f), y, task, self.config.loss)  # noqa: E731
        fit(loss, self.head.parameters(), features, self.config, self.runtime, desc=f"linear {task.name}")

    def predict(self, x: torch.Tensor, task_id: Optional[int] = None) -> torch.Tensor:
        return self.head(self.features(x))
