"""Full fine-tuning: every backbone weight and a growing linear head train on each task in turn.

The catastrophic-forgetting baseline of the forgetting study (Bafghi et al., 2024) and the "sequential
fine-tuning" lower bound of continual-learning papers. Loss: cross-entropy over the current task's classes by default
(`loss: local`, as PyCIL's and PILOT's `finetune` baselines), or over all classes seen (`loss: global`).
"""

from __future__ import annotations

from dataclasses import dataclass

from strategies._loop import TrainConfig
from strategies._tuned import TunedBackbone
from strategies.base import register


@dataclass(frozen=True)
class FullFTConfig(TrainConfig):
    lr: float = 1e-4  # the whole network moves: a small lr, as fine-tuning recipes use


@register("full_ft")
class FullFineTuning(TunedBackbone):
    Config = FullFTConfig
