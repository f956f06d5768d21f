"""Top-k fine-tuning: the last k transformer blocks, the final norm and a growing linear head train; the rest of the
backbone is frozen.

As the forgetting study's "Top-3" row (Bafghi et al., 2024; k = 3 on ViT-B/16: 21.3 M trainable parameters). The
frozen blocks before the last k are run once per task when the training data is not augmented (`TunedBackbone`).
"""

from __future__ import annotations

from dataclasses import dataclass

from benchmark.config import require
from strategies._loop import TrainConfig
from strategies._tuned import TunedBackbone
from strategies._vit import depth
from strategies.base import register


@dataclass(frozen=True)
class TopKConfig(TrainConfig):
    k: int = 3  # trainable blocks, counted from the last one; at most the backbone's depth
    lr: float = 1e-4

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.k >= 1, "k", ">= 1", self.k)


@register("topk")
class TopK(TunedBackbone):
    Config = TopKConfig

    def __init__(self, backbone, config: TopKConfig, runtime) -> None:
        super().__init__(backbone, config, runtime)
        require(config.k <= depth(self.backbone), "strategies.topk.k",
                f"at most the backbone's depth ({depth(self.backbone)} blocks)", config.k)
        self.backbone.requires_grad_(False)
        for module in (*self.backbone.blocks[-config.k:], self.backbone.norm, self.backbone.fc_norm):
            module.requires_grad_(True)
