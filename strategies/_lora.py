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

Per-task adapters (selective LoRA, InfLoRA, SD-LoRA, CL-LoRA) are named `task_prefix(t) + target` in their layer, so
that the tasks a checkpoint holds can be read from its tensor names (`stored_tasks`) and rebuilt before it loads. A
layer applies every adapter it holds, or those whose name starts with its `only` prefix (`only_adapters` switches it
for a while: one task's adapters, a frozen teacher's copy).
"""

from __future__ import annotations

import contextlib
import math
import re
from typing import Callable, Iterable, Iterator, Mapping, Optional

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

    def tensors(self) -> tuple[torch.Tensor, ...]:
        """Every tensor the update depends on: when one changes, a merged weight is recomputed."""
        return self.A, self.B


class WeightedLowRank(LowRank):
    """The update `scale · w · B A`, w one entry (`index`) of a learnable tensor `weights` that several adapters
    share: SD-LoRA's per-task magnitude (a scalar, index ()), CL-LoRA's block-wise weights (one per block and q, k, v
    part). The weight trains with the factors, and a merged weight is recomputed when it changes."""

    def __init__(self, in_features: int, rows: tuple[int, int], rank: int, scale: float, weights: nn.Parameter,
                 index: tuple[int, ...] = ()) -> None:
        super().__init__(in_features, rows, rank, scale)
        self.weights = weights
        self.index = index

    def factor(self) -> torch.Tensor:
        return self.scale * self.weights[self.index]

    def delta_weight(self) -> torch.Tensor:
        return self.factor() * (self.B @ self.A)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.factor().to(x.dtype) * F.linear(F.linear(x, self.A), self.B)

    def tensors(self) -> tuple[torch.Tensor, ...]:
        return self.A, self.B, self.weights


class DecoupledLowRank(WeightedLowRank):
    """SD-LoRA's update `m · B A / n`: a magnitude m (a scalar parameter, which several adapters may share) times
    the product B A, divided by a frozen normaliser n.

    While its task trains, n = 1 and m, A, B all train. `fix_direction()` sets n = ||B||_F ||A||_F (the reference
    code's normaliser) and freezes A and B: from then on only the magnitude can change what the adapter adds, and the
    direction B A / n stays bit-identical."""

    def __init__(self, in_features: int, rows: tuple[int, int], rank: int, scale: float,
                 magnitude: nn.Parameter) -> None:
        super().__init__(in_features, rows, rank, scale, magnitude)
        self.register_buffer("inverse_norm", torch.ones(()))

    def factor(self) -> torch.Tensor:
        return super().factor() * self.inverse_norm

    def tensors(self) -> tuple[torch.Tensor, ...]:
        return *super().tensors(), self.inverse_norm

    @torch.no_grad()
    def fix_direction(self) -> None:
        """Freeze A and B and normalise the product (an untrained B = 0 leaves a zero direction, not a NaN)."""
        norm = torch.linalg.matrix_norm(self.B.float()) * torch.linalg.matrix_norm(self.A.float())
        self.inverse_norm = torch.where(norm > 0, 1 / norm, torch.zeros_like(norm)).to(self.inverse_norm)
        self.A.requires_grad_(False)
        self.B.requires_grad_(False)

    def direction(self) -> torch.Tensor:
        return self.inverse_norm * (self.B @ self.A)


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
        tensors = [self.weight, *(t for a in adapters for t in a.tensors())]
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


def lora_bytes(blocks: Iterable[nn.Module], targets: Iterable[str], rank: int) -> int:
    """Bytes of the float32 factors one `add_lora(blocks, targets, rank, ...)` adds (A: rank x in, B: rows x rank
    per target and block), from the layers' shapes, allocating nothing: a memory estimate."""
    targets = tuple(targets)
    total = 0
    for block in blocks:
        for target in targets:
            layer = block.get_submodule(TARGETS[target][0])
            start, stop = target_rows(layer, target)
            total += rank * (layer.in_features + stop - start)
    return 4 * total


def lora_layers(model: nn.Module) -> list[LoRALinear]:
    return [module for module in model.modules() if isinstance(module, LoRALinear)]


@contextlib.contextmanager
def only_adapters(layers: Iterable[LoRALinear], prefix: Optional[str]) -> Iterator[None]:
    """Within the block, `layers` apply only their adapters named `prefix...` (None: all); then as before."""
    layers = list(layers)
    before = [layer.only for layer in layers]
    for layer in layers:
        layer.only = prefix
    try:
        yield
    finally:
        for layer, only in zip(layers, before):
            layer.only = only


def task_prefix(task: int) -> str:
    """The name prefix of task `task`'s adapters in their layers."""
    return f"t{task}_"


def task_adapters(blocks: Iterable[nn.Module], targets: Iterable[str], task: int) -> list[LowRank]:
    """Task `task`'s adapters of every target of every block, in (block, target) order."""
    targets = tuple(targets)
    return [target_layer(block, target).adapters[task_prefix(task) + target] for block in blocks for target in targets]


def stored_tasks(state: Mapping[str, torch.Tensor]) -> int:
    """How many tasks' adapters a (checkpoint) state holds: one more than the highest task prefix in its names."""
    found = [int(m.group(1)) for name in state for m in [re.search(r"\.adapters\.t(\d+)_", name)] if m]
    return max(found) + 1 if found else 0
