"""A linear classifier that grows with the classes seen, keeping the rows of classes already learned.

Written by hand rather than with Avalanche's `IncrementalClassifier`, which reads the classes from an experience
attribute that its domain-incremental benchmarks do not carry and masks unseen units; our tasks already state how
many outputs they need (`Task.num_outputs`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class GrowingClassifier(nn.Module):
    def __init__(self, in_features: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(0, in_features))
        self.bias = nn.Parameter(torch.empty(0))

    @property
    def num_outputs(self) -> int:
        return self.weight.shape[0]

    @torch.no_grad()
    def grow(self, num_outputs: int) -> None:
        """Add output units up to `num_outputs`; new rows start as timm initialises heads (trunc-normal 0.02, bias 0).

        The parameters are replaced, so an optimiser must be built after growing (the shared loop builds one per task).
        """
        old_outputs, in_features = self.weight.shape
        if num_outputs <= old_outputs:
            return
        weight = torch.empty(num_outputs, in_features, device=self.weight.device)
        nn.init.trunc_normal_(weight, std=0.02)
        weight[:old_outputs] = self.weight
        bias = torch.zeros(num_outputs, device=self.bias.device)
        bias[:old_outputs] = self.bias
        self.weight = nn.Parameter(weight, requires_grad=self.weight.requires_grad)
        self.bias = nn.Parameter(bias, requires_grad=self.bias.requires_grad)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return F.linear(features, self.weight, self.bias)
