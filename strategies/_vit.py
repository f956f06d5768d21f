"""A timm VisionTransformer cut at a block boundary, for strategies that train only the blocks after a frozen prefix.

The cut follows timm's own `forward_features` / `forward_head` (patch embedding, position embedding, pre-norm,
blocks, final norm, pooling), so `suffix(prefix(x))` equals `model(x)` for a model without a classifier.
"""

from __future__ import annotations

import torch
from torch import nn

from strategies._loop import Stage


def prefix_stage(model: nn.Module, cut: int) -> Stage:
    """images -> the tokens entering block `cut` (cut = len(blocks): the tokens leaving the last block)."""

    def prefix(images: torch.Tensor) -> torch.Tensor:
        tokens = model.norm_pre(model.patch_drop(model._pos_embed(model.patch_embed(images))))
        return model.blocks[:cut](tokens)

    return prefix


def suffix_stage(model: nn.Module, cut: int) -> Stage:
    """Tokens entering block `cut` -> pre-logit features (blocks from `cut` on, final norm, pooling)."""

    def suffix(tokens: torch.Tensor) -> torch.Tensor:
        return model.forward_head(model.norm(model.blocks[cut:](tokens)), pre_logits=True)

    return suffix


def depth(model: nn.Module) -> int:
    return len(model.blocks)
