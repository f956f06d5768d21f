"""SimpleCIL (Zhou, Cai, Ye, Zhan; "Revisiting Class-Incremental Learning with Pre-Trained Models: Generalizability
and Adaptivity are All You Need", IJCV 2024; arXiv 2303.07338), after LAMDA-PILOT `models/simplecil.py`.

Nothing trains. Each class's classifier row is the mean of the frozen backbone's features ([CLS] after the final
norm: `backbone(x)`, the pre-logits) over its training images under the test transform (`Task.train_unaugmented`),
and the logits are cosine similarities to those rows (`strategies._prototypes`). One forward pass per image; d
numbers (plus a count) stored per class.

No hyper-parameters: the published settings are the backbone and the stream (configs/simplecil_*.yaml name them).

Deviations from the reference:
- Domain-incremental streams (not in the paper): a class seen again in a later domain gets the mean over all of its
  images so far (RanPAC's NCM baseline accumulates the same per-class sums), instead of being overwritten.
- Features are computed at the suite's precision (bf16 autocast where configured), the cosine logits in float32.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from benchmark.streams import Task
from strategies._prototypes import ClassPrototypes, task_features
from strategies.base import Strategy, register


@dataclass(frozen=True)
class SimpleCILConfig:
    """SimpleCIL has no hyper-parameters."""


@register("simplecil")
class SimpleCIL(Strategy):
    Config = SimpleCILConfig
    classifies_features = True
    feature_free = ("prototypes",)
    shares_with = "frozen backbone"

    def __init__(self, backbone: nn.Module, config: SimpleCILConfig, runtime) -> None:
        super().__init__(backbone, config, runtime)
        self.backbone.requires_grad_(False)
        self.prototypes = ClassPrototypes(self.feature_dim).to(runtime.device)

    def train_task(self, task: Task) -> None:
        self.eval()
        features, labels = task_features(self.features, task.train_unaugmented, self.runtime, self.feature_key())
        self.prototypes.add(features, labels, task.num_outputs)

    def predict(self, x: torch.Tensor, task_id: Optional[int] = None) -> torch.Tensor:
        return self.classify(self.features(x))

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        return self.prototypes(features)

    def feature_identity(self) -> str:
        """The frozen backbone's features, a function of its modules alone: shared with every strategy whose
        features are the same frozen network's (the linear probe's, a fine-tuning run's before training)."""
        return ""
