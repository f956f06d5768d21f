"""Low-rank adapters (LoRA, Hu et al. 2021) on the linear layers of timm ViT blocks, including the query, key and
value parts of timm's fused `qkv` projection.

Written by hand rather than with Hugging Face `peft`: peft adapts whole `nn.Linear` modules, while the forgetting
study (peft-vit, on Hugging Face ViTs with separate query and value layers) adapts the query and value projections,
which timm fuses with the key into one `qkv` layer. A peft LoRA on the whole `qkv` would also adapt the keys and
share one rank across the three parts: a different method (with, by coincidence, the same parameter count). Here
each target (a part of `qkv`, `proj`, `fc1` or `fc2`) gets its own pair of factors on its own rows of the output.

The wrapped layer keeps the pre-trained weight and bias tensors themselves (so cost accounting and checkpoints see
them as the backbone's) and, in eval mode, merges the updates into one weight: inference costs what the original
layer costs, as with peft's `merge_adapter`.
"""

from __future__ import annotations

import math
from typing import Callable, Iterable, Optional

import torch
import torch.nn.functional as F
from torch import nn

# target name -> (the linear layer's path inside a timm Block, which third of its output rows; None = all rows)
TARGETS: dict[str, tuple[str, Optional[int]]] = {
    "q": ("attn.qkv", 0), "k": ("attn.qkv", 1), "v": ("attn.qkv", 2),
    "proj": ("attn.proj", None), "fc1": ("mlp.fc1", None), "fc2": ("mlp.fc2", None),
}


class LowRank(nn.Module):
    """The update `scale · B A` of output rows [start, stop) of a linear layer. A is Kaiming-uniform and B zero (as
    in LoRA and peft), so a new adapter changes nothing until B has trained."""

    def __init__(self, in_features: int, rows: tuple[int, int], rank: int, scale: float) -> None:
        super().__init__()
        self.rows = rows
        self.scale = scale
        self.A = nn.Parameter(torch.empty(rank, in_features))
        self.B = nn.Parameter(torch.zeros(rows[1] - rows[0], rank))
        nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))

    def delta_weight(self) -> torch.Tensor:
        return self.scale * (self.B @ self.A)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * F.linear(F.linear(x, self.A), self.B)


class LoRALinear(nn.Linear):
    """A pre-trained linear layer plus low-rank updates of some of its output rows (`adapters`, by target name)."""

    def __init__(self, layer: nn.Linear) -> None:
        super().__init__(layer.in_features, layer.out_features, bias=layer.bias is not None, device="meta")
        self.weight, self.bias = layer.weight, layer.bias  # the same tensors: still the backbone's parameters
        self.adapters = nn.ModuleDict()
        self.only: Optional[str] = None  # apply only adapters whose name starts with this (None: all)
        self._merged: Optional[tuple[tuple[int, ...], torch.Tensor]] = None  # (tensor versions, merged weight)

    def active(self) -> list[LowRank]:
        """Adapters applied in the forward pass: all of them, or those selected by the `only` name prefix."""
        return [a for name, a in self.adapters.items() if self.only is None or name.startswith(self.only)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return F.linear(x, self.merged_weight(), self.bias)
        out = F.linear(x, self.weight, self.bias)
        for adapter in self.active():  # zero-padded to full width: ~3x faster to train than adding into a slice
            start, stop = adapter.rows
            out = out + F.pad(adapter(x), (start, self.out_features - stop)).to(out.dtype)
        return out

    def merged_weight(self) -> torch.Tensor:
        """W0 + the active updates, recomputed only when a tensor it depends on has changed (training, loading)."""
        adapters = self.active()
        tensors = [self.weight, *(t for a in adapters for t in (a.A, a.B))]
        key = tuple(id(a) for a in adapters) + tuple(t._version for t in tensors) + tuple(id(t) for t in tensors)
        if self._merged is None or self._merged[0] != key:
            with torch.no_grad(), torch.autocast(self.weight.device.type, enabled=False):
                weight = self.weight.detach().clone()
                for adapter in adapters:
                    weight[adapter.rows[0]:adapter.rows[1]] += adapter.delta_weight()
            self._merged = (key, weight)
        return self._merged[1]


def target_layer(block: nn.Module, target: str) -> LoRALinear:
    """The (wrapped) linear layer of `block` that `target` adapts; a plain linear layer is wrapped in place."""
    path, _ = TARGETS[target]
    layer = block.get_submodule(path)
    if not isinstance(layer, LoRALinear):
        layer = LoRALinear(layer)
        block.set_submodule(path, layer)
    return layer


def target_rows(layer: nn.Linear, target: str) -> tuple[int, int]:
    _, third = TARGETS[target]
    if third is None:
        return 0, layer.out_features
    size = layer.out_features // 3
    return third * size, (third + 1) * size


def add_lora(blocks: Iterable[nn.Module], targets: Iterable[str], rank: int, scale: float, name: str = "",
             make: Callable[..., LowRank] = LowRank) -> list[LowRank]:
    """Give every target of every block a new adapter `make(in_features, rows, rank, scale)`, named
    `name + target` in its layer; returns them in (block, target) order."""
    added = []
    for block in blocks:
        for target in targets:
            layer = target_layer(block, target)
            adapter = make(layer.in_features, target_rows(layer, target), rank, scale).to(layer.weight.device)
            layer.adapters[name + target] = adapter
            added.append(adapter)
    return added


def lora_layers(model: nn.Module) -> list[LoRALinear]:
    return [module for module in model.modules() if isinstance(module, LoRALinear)]
