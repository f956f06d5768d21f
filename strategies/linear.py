"""Linear probing: the backbone is frozen; only a growing linear head trains.

The no-forgetting end of the trade-off: the pre-trained features are untouched, so retention on the pre-training
domain is exactly the backbone's. The frozen backbone's features are computed once per task (no augmentation), so
an epoch costs only the head. Loss: cross-entropy over the current task's classes by default (`loss: local`), or over
all classes seen (`loss: global`).
"""

from __future__ import annotations

from dataclasses import dataclass

from strategies._loop import TrainConfig
from strategies._tuned import TunedBackbone
from strategies.base import register


@dataclass(frozen=True)
class LinearConfig(TrainConfig):
    lr: float = 1e-2  # only a head trains: a larger lr than fine-tuning


@register("linear")
class LinearProbe(TunedBackbone):
    Config = LinearConfig
    shares_with = "frozen backbone"  # its features are the pre-trained backbone's, as SimpleCIL's

    def __init__(self, backbone, config: LinearConfig, runtime) -> None:
        super().__init__(backbone, config, runtime)
        self.backbone.requires_grad_(False)
