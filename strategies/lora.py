"""LoRA: low-rank adapters on the attention projections of every block; the backbone is frozen, the adapters and a
growing linear head train, and keep training task after task.

As the forgetting study's LoRA rows (peft-vit: `LoraConfig(r, lora_alpha=r, target_modules=["query", "value"])`, so
the update `B A` is scaled by alpha / r = 1). Defaults: the query and value parts of timm's fused `qkv`; `targets`
takes any of q, k, v, proj, fc1, fc2. The layer is this project's (`strategies/_lora.py` says why peft did not fit).
In eval mode the adapters are merged into the weights: inference costs exactly the backbone's FLOPs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from benchmark.config import require
from strategies._lora import TARGETS, add_lora
from strategies._loop import TrainConfig
from strategies._tuned import TunedBackbone
from strategies.base import register


@dataclass(frozen=True)
class LoRAConfig(TrainConfig):
    rank: int = 8  # r; the study compares 4, 8 and 16
    alpha: Optional[float] = None  # the update is scaled by alpha / rank; None = rank (scale 1, the study's setting)
    targets: tuple[str, ...] = ("q", "v")  # adapted projections of every block: q, k, v (parts of qkv), proj, fc1, fc2
    lr: float = 1e-3

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.rank >= 1, "rank", ">= 1", self.rank)
        require(self.alpha is None or self.alpha > 0, "alpha", "> 0 or null", self.alpha)
        require(len(self.targets) >= 1 and set(self.targets) <= set(TARGETS) and
                len(set(self.targets)) == len(self.targets),
                "targets", f"distinct names from {', '.join(TARGETS)}", list(self.targets))

    @property
    def scale(self) -> float:
        return (self.alpha if self.alpha is not None else self.rank) / self.rank


@register("lora")
class LoRA(TunedBackbone):
    Config = LoRAConfig

    def __init__(self, backbone, config: LoRAConfig, runtime) -> None:
        super().__init__(backbone, config, runtime)
        self.backbone.requires_grad_(False)
        add_lora(self.backbone.blocks, config.targets, config.rank, config.scale)
