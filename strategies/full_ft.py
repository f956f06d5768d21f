"""Full fine-tuning: every backbone weight and a growing linear head train on each task in turn.

The catastrophic-forgetting baseline of the forgetting study (Bafghi et al., 2024) and the "sequential
fine-tuning" lower bound of continual-learning papers. Loss: cross-entropy over the current task's classes by default
(`loss: local`, as PyCIL's and PILOT's `finetune` baselines), or over all classes seen (`loss: global`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from benchmark.streams import Task
from strategies._heads import GrowingClassifier
from strategies._loop import TrainConfig, fit, task_cross_entropy
from strategies.base import Strategy, register


@dataclass(frozen=True)
class FullFTConfig(TrainConfig):
    lr: float = 1e-4  # the whole network moves: a small lr, as fine-tuning recipes use


@register("full_ft")
class FullFineTuning(Strategy):
    Config = FullFTConfig

    def __init__(self, backbone, config: FullFTConfig, runtime) -> None:
        super().__init__(backbone, config, runtime)
        self.head = GrowingClassifier(self.feature_dim).to(runtime.device)

    def train_task(self, task: Task) -> None:
        self.head.grow(task.num_outputs)
        self.train()
        loss = lambda x, y: task_cross_entropy(self.predict(x), y, task, self.config.loss)  # noqa: E731
        fit(loss, self.parameters(), task.train, self.config, self.runtime, desc=f"full_ft {task.name}")

    def predict(self, x: torch.Tensor, task_id: Optional[int] = None) -> torch.Tensor:
        return self.head(self.features(x))
