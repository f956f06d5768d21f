"""Classifier heads that grow with the classes seen, keeping what earlier tasks learned: one growing linear layer
(`GrowingClassifier`), or one linear head per task with the earlier heads frozen (`TaskHeads`).

Written by hand rather than with Avalanche's `IncrementalClassifier`, which reads the classes from an experience
attribute that its domain-incremental benchmarks do not carry and masks unseen units; our tasks already state how
many outputs they need (`Task.num_outputs`).
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

HeadInit = Callable[[torch.Tensor, torch.Tensor], None]  # fills new rows (weight, bias) in place


def _trunc_normal(weight: torch.Tensor, bias: torch.Tensor) -> None:
    nn.init.trunc_normal_(weight, std=0.02)
    bias.zero_()


def _linear(weight: torch.Tensor, bias: torch.Tensor) -> None:
    bound = 1 / math.sqrt(weight.shape[1])
    nn.init.kaiming_uniform_(weight, a=math.sqrt(5))
    bias.uniform_(-bound, bound)


def _linear_zero_bias(weight: torch.Tensor, bias: torch.Tensor) -> None:
    nn.init.kaiming_uniform_(weight, a=math.sqrt(5))
    bias.zero_()


def _kaiming_uniform(weight: torch.Tensor, bias: torch.Tensor) -> None:
    nn.init.kaiming_uniform_(weight, nonlinearity="linear")
    bias.zero_()


def _small_normal(weight: torch.Tensor, bias: torch.Tensor) -> None:
    nn.init.normal_(weight, std=0.001)
    bias.zero_()


HEAD_INITS: dict[str, HeadInit] = {
    "trunc_normal": _trunc_normal,  # timm's heads: weight trunc-normal(std 0.02), bias 0
    "linear": _linear,  # nn.Linear's reset_parameters: weight and bias U(-1/sqrt(d), 1/sqrt(d))
    "linear_zero_bias": _linear_zero_bias,  # nn.Linear's weight, bias 0
    "kaiming_uniform": _kaiming_uniform,
    "normal_0.001": _small_normal,  # LAE's heads: weight N(0, 0.001^2), bias 0  # PyCIL's SimpleLinear: weight U(-sqrt(3/d), sqrt(3/d)) (std 1/sqrt(d)), bias 0
}


class GrowingClassifier(nn.Module):
    def __init__(self, in_features: int, init: str = "trunc_normal", bias: bool = True) -> None:
        super().__init__()
        self.init = HEAD_INITS[init]
        self.weight = nn.Parameter(torch.empty(0, in_features))
        self.register_parameter("bias", nn.Parameter(torch.empty(0)) if bias else None)  # None: rows only (TUNA)

    @property
    def num_outputs(self) -> int:
        return self.weight.shape[0]

    @torch.no_grad()
    def grow(self, num_outputs: int) -> None:
        """Add output units up to `num_outputs`; new rows start as the head's `init` fills them (by default as timm
        initialises heads: trunc-normal 0.02, bias 0).

        The parameters are replaced, so an optimiser must be built after growing (the shared loop builds one per task).
        """
        old_outputs, in_features = self.weight.shape
        if num_outputs <= old_outputs:
            return
        weight = torch.empty(num_outputs, in_features, device=self.weight.device)
        bias = torch.zeros(num_outputs, device=self.weight.device)
        self.init(weight, bias)
        weight[:old_outputs] = self.weight
        self.weight = nn.Parameter(weight, requires_grad=self.weight.requires_grad)
        if self.bias is not None:
            bias[:old_outputs] = self.bias
            self.bias = nn.Parameter(bias, requires_grad=self.bias.requires_grad)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return F.linear(features, self.weight, self.bias)


class TaskHeads(nn.Module):
    """One linear head per task, their logits concatenated in task order (SLCA's `SimpleContinualLinear`, LAE's
    `DynamicSimpleHead`): the newest head trains, the earlier ones are frozen.

    Kept as two growing pairs of tensors, the earlier heads' rows (`frozen_weight`, `frozen_bias`) and the newest
    head's (`weight`, `bias`), with `sizes` (outputs per head) as a buffer: a checkpoint taken after any number of
    tasks loads into a freshly built module (`benchmark.checkpoints.load_resizing`), which per-task submodules would
    not. A task that brings no new output unit (domain-incremental streams) adds no head: the newest head, which
    already holds its classes, goes on training.
    """

    def __init__(self, in_features: int, init: str) -> None:
        super().__init__()
        self.init = HEAD_INITS[init]  # fills a new head's rows in place
        self.frozen_weight = nn.Parameter(torch.empty(0, in_features))
        self.frozen_bias = nn.Parameter(torch.empty(0))
        self.weight = nn.Parameter(torch.empty(0, in_features))
        self.bias = nn.Parameter(torch.empty(0))
        self.register_buffer("sizes", torch.zeros(0, dtype=torch.long))

    @property
    def num_outputs(self) -> int:
        return int(self.sizes.sum())

    @torch.no_grad()
    def add(self, num_outputs: int) -> None:
        """Freeze every head and append a trainable one for the units up to `num_outputs` (none when there are no new
        units: the newest head stays trainable). Parameters are replaced: build optimisers afterwards."""
        new = num_outputs - self.num_outputs
        if new > 0:
            self.frozen_weight = nn.Parameter(torch.cat([self.frozen_weight, self.weight]))
            self.frozen_bias = nn.Parameter(torch.cat([self.frozen_bias, self.bias]))
            weight, bias = self.weight.new_empty(new, self.weight.shape[1]), self.bias.new_zeros(new)
            self.init(weight, bias)
            self.weight = nn.Parameter(weight)
            self.bias = nn.Parameter(bias)
            self.sizes = torch.cat([self.sizes, self.sizes.new_tensor([new])])
        self.freeze_earlier_heads()

    def freeze_earlier_heads(self) -> None:
        """Only the newest head trains (after a phase that trained them all, or after loading a checkpoint)."""
        self.frozen_weight.requires_grad_(False)
        self.frozen_bias.requires_grad_(False)
        self.weight.requires_grad_(True)
        self.bias.requires_grad_(True)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.cat([F.linear(features, self.frozen_weight, self.frozen_bias),
                          F.linear(features, self.weight, self.bias)], dim=1)

    def rows(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Every head's weight rows and biases in output order, as one matrix and one vector (copies)."""
        return (torch.cat([self.frozen_weight, self.weight]).detach(),
                torch.cat([self.frozen_bias, self.bias]).detach())

    @torch.no_grad()
    def load_rows(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        """Overwrite every head with `rows()`-shaped values (e.g. a copy taken before a phase that changed them)."""
        cut = self.frozen_weight.shape[0]
        self.frozen_weight.copy_(weight[:cut])
        self.weight.copy_(weight[cut:])
        self.frozen_bias.copy_(bias[:cut])
        self.bias.copy_(bias[cut:])

    def split(self, logits: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """`logits` cut into the blocks of the individual heads."""
        return logits.split(self.sizes.tolist(), dim=1)
