"""Block expansion: p identity-initialised blocks inserted into the frozen backbone; only they and a growing linear
head train, and keep training task after task.

As the forgetting study's reference (peft-vit `src/model.py`, after LLaMA-Pro): after every (depth / p)-th original
block, a copy of that block whose attention output projection and MLP output layer (weights and biases) are zero, so
each new block starts as the identity and the expanded network computes exactly what the original did. The copied
norms, qkv and fc1 keep their pre-trained values; the final norm stays frozen. p must divide the depth (the study:
p = 1..4 on 12 blocks). The original blocks before the first new one are run once per task when the training data
is not augmented (`TunedBackbone`).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from benchmark.config import require
from strategies._loop import TrainConfig
from strategies._tuned import TunedBackbone
from strategies._vit import depth
from strategies.base import register


@dataclass(frozen=True)
class BlockExpansionConfig(TrainConfig):
    p: int = 2  # new blocks; must divide the backbone's depth
    lr: float = 1e-4

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.p >= 1, "p", ">= 1", self.p)


def identity_copy(block: nn.Module) -> nn.Module:
    """A trainable copy of `block` whose residual branches output zero: attention `proj` and MLP `fc2` are zeroed."""
    new = copy.deepcopy(block).requires_grad_(True)
    with torch.no_grad():
        for layer in (new.attn.proj, new.mlp.fc2):
            layer.weight.zero_()
            layer.bias.zero_()
    return new


@register("block_expansion")
class BlockExpansion(TunedBackbone):
    Config = BlockExpansionConfig

    def __init__(self, backbone, config: BlockExpansionConfig, runtime) -> None:
        super().__init__(backbone, config, runtime)
        original = depth(self.backbone)
        require(original % config.p == 0, "strategies.block_expansion.p",
                f"a divisor of the backbone's depth ({original} blocks)", config.p)
        self.backbone.requires_grad_(False)
        group = original // config.p
        expanded: list[nn.Module] = []
        for index, block in enumerate(self.backbone.blocks):
            expanded.append(block)
            if (index + 1) % group == 0:
                expanded.append(identity_copy(block))
        self.backbone.blocks = nn.Sequential(*expanded)
