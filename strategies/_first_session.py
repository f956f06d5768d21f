"""First-session adaptation, shared by APER (its adapter variant) and RanPAC's optional phase 1: AdaptFormer adapters
in every block of the frozen ViT, trained on the first task only with a cosine head, then frozen for good; the head
is discarded (LAMDA-PILOT `models/aper_adapter.py` + `backbone/vit_adapter.py`, RanPAC/RanPAC `RanPAC.py` `_train`).
EASE trains every task's adapter set the same way (`train_with_cosine_head`, a fresh head over the task's classes).

The adapter is PILOT's AdaptFormer setting: parallel to the MLP, input the residual stream, bottleneck 64, ReLU,
dropout 0.1 on the bottleneck, fixed scale 0.1, "lora" initialisation (a fresh adapter adds nothing, so the
pre-trained features are unchanged before training). The head is PILOT's `CosineLinear`: sigma * cos(f, w_c), sigma
learnable from 1, rows uniform in +-1/sqrt(d), one row per class of the task (EASE's `proxy_fc`; on the first task
of a class-incremental stream these are all the classes seen). Training: SGD (momentum 0.9) on adapters and head,
cross-entropy over the task's classes, cosine lr schedule to 0.

Deviation: the shared loop anneals the lr per step, the reference per epoch (`CosineAnnealingLR(T_max=epochs)`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from benchmark.config import require
from benchmark.recipe import RecipeConfig
from benchmark.runtime import Runtime
from benchmark.streams import Task
from strategies._adapter import Adapter, bypassed
from strategies._loop import SCHEDULES, TrainConfig, fit, local_units, training_data
from strategies._prototypes import cosine_logits
from strategies._tuned import set_train_modes


# LAMDA-PILOT's recipe, which APER, EASE, MOS and TUNA's code all run (their utils/data.py `build_transform` and
# per-epoch `CosineAnnealingLR`): [0, 1] pixels, RRC scale (0.05, 1), test Resize(256) + CenterCrop(224), fp32
PILOT_RECIPE = dict(input="unnormalised", schedule="cosine-epochs", precision="fp32")

@dataclass(frozen=True)
class FirstSessionConfig(RecipeConfig):
    """Fields a strategy with first-session adaptation adds to its config; None: filled by the strategy's preset."""

    epochs: Optional[int] = None  # first-task epochs (0: no adaptation, where the strategy allows it)
    batch_size: Optional[int] = None
    lr: Optional[float] = None  # SGD
    weight_decay: Optional[float] = None
    schedule: Optional[str] = None  # cosine (per step, to 0) or cosine-epochs (the references, per epoch)
    momentum: float = 0.9
    bottleneck: int = 64  # adapter width (PILOT ffn_num)
    adapter_scale: float = 0.1  # fixed output scale (PILOT ffn_adapter_scalar)
    adapter_dropout: float = 0.1  # on the bottleneck, while training

    def check_first_session(self, min_epochs: int) -> None:
        """Validate the first-session fields (after the strategy's preset filled them)."""
        if self.schedule is None:
            object.__setattr__(self, "schedule", "cosine")
        self.resolve_recipe()
        require(self.epochs >= min_epochs, "epochs", f">= {min_epochs}", self.epochs)
        require(self.batch_size >= 1, "batch_size", ">= 1", self.batch_size)
        require(self.lr > 0, "lr", "> 0", self.lr)
        require(self.schedule in SCHEDULES, "schedule", f"one of {', '.join(SCHEDULES)}", self.schedule)
        require(self.weight_decay >= 0, "weight_decay", ">= 0", self.weight_decay)
        require(0 <= self.momentum < 1, "momentum", "in [0, 1)", self.momentum)
        require(self.bottleneck >= 1, "bottleneck", ">= 1", self.bottleneck)
        require(self.adapter_scale > 0, "adapter_scale", "> 0", self.adapter_scale)
        require(0 <= self.adapter_dropout < 1, "adapter_dropout", "in [0, 1)", self.adapter_dropout)

    def train_config(self) -> TrainConfig:
        return TrainConfig(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, optimizer="sgd",
                           momentum=self.momentum, weight_decay=self.weight_decay, schedule=self.schedule,
                           loss="global")


class CosineHead(nn.Module):
    """sigma * cos(features, w_c): the head the first session trains, then discards."""

    def __init__(self, dim: int, num_outputs: int) -> None:
        super().__init__()
        bound = 1.0 / math.sqrt(dim)
        self.weight = nn.Parameter(torch.empty(num_outputs, dim).uniform_(-bound, bound))
        self.sigma = nn.Parameter(torch.ones(()))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.sigma * cosine_logits(features, self.weight)


class FirstSessionAdapters(nn.Module):
    """One AdaptFormer adapter per block of `backbone`, attached on construction."""

    def __init__(self, backbone: nn.Module, config: FirstSessionConfig) -> None:
        super().__init__()
        dim = backbone.num_features
        self.adapters = nn.ModuleList(
            Adapter(dim, config.bottleneck, position="mlp", activation="relu", scale=config.adapter_scale,
                    dropout=config.adapter_dropout) for _ in backbone.blocks)
        for adapter, block in zip(self.adapters, backbone.blocks):
            adapter.attach(block)

    def bypassed(self):
        """Context: the backbone runs without the adapters (the frozen, pre-trained network)."""
        return bypassed(self.adapters)


def train_with_cosine_head(owner: nn.Module, backbone: nn.Module, task: Task, config: FirstSessionConfig,
                           runtime: Runtime) -> None:
    """Train the adapters `owner` holds (its only trainable parameters; `backbone(x)` runs them) and a fresh cosine
    head over `task`'s classes on `task`; the head is dropped afterwards. `owner` is the strategy: train mode exactly
    where parameters train."""
    head = CosineHead(backbone.num_features, len(task.labels)).to(runtime.device)
    position = local_units(task.labels, task.num_outputs, runtime.device)[1]
    set_train_modes(owner)
    head.train()
    loss = lambda x, y: F.cross_entropy(head(backbone(x)), position[y])  # noqa: E731
    parameters = [p for p in owner.parameters() if p.requires_grad] + list(head.parameters())
    fit(loss, parameters, training_data(task, runtime), config.train_config(), runtime,
        desc=f"adapters with a cosine head {task.name}")
    owner.eval()
