"""First-session adaptation, shared by APER and RanPAC's optional phase 1: a parameter-efficient module (or a copy of
the whole network) on the frozen ViT, trained on the first task only with a cosine head, then frozen for good; the
head is discarded (RevisitingCIL@a2e6b71 `models/aper_*.py` `_train`, RanPAC/RanPAC@012927f `RanPAC.py` `_train`).

Which module is `petl` (`PETLS`, a registry of builders (backbone, config) -> `FirstSessionModule`), the variants of
RevisitingCIL's `exps/aper_*`:
- `adapter` (here): AdaptFormer adapters in every block, PILOT's setting: parallel to the MLP, input the residual
  stream, bottleneck 64, ReLU, dropout 0.1 on the bottleneck, fixed scale 0.1, "lora" initialisation (a fresh adapter
  adds nothing, so the pre-trained features are unchanged before training);
- `ssf` (`strategies._ssf`): a per-channel scale and shift after the patch embedding, six places in every block and
  the final norm;
- `vpt_shallow`, `vpt_deep` (`strategies._vpt`): `prompt_tokens` learnable tokens at the input, or in every block;
- `finetune` (here): every weight of a copy of the backbone (RevisitingCIL `models/aper_finetune.py`: the optimiser
  takes all of the network's parameters); the backbone itself stays the pre-trained network.
A module's `adapted(backbone, x)` is the adapted network's features, `pretrained(backbone, x)` the pre-trained
network's: the hooked modules turned off (`switches`), or the untouched backbone beside a fine-tuned copy.
EASE trains every task's adapter set the same way (`train_with_cosine_head`, a fresh head over the task's classes).

The head is PILOT's `CosineLinear`: sigma * cos(f, w_c), sigma learnable from 1, rows uniform in +-1/sqrt(d).
Training: SGD (momentum 0.9) on the module's parameters and the head, cross-entropy over the first task's classes,
cosine lr schedule to 0.

Deviation: the shared loop anneals the lr per step by default (`schedule: cosine`), the references per epoch
(`schedule: cosine-epochs`, the `reference*` presets).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from benchmark.config import require
from benchmark.recipe import RecipeConfig
from benchmark.registry import Registry
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

    petl: Optional[str] = None  # the first-session module: a name of PETLS (adapter, ssf, vpt_shallow, ...)
    epochs: Optional[int] = None  # first-task epochs (0: no adaptation, where the strategy allows it)
    batch_size: Optional[int] = None
    lr: Optional[float] = None  # SGD
    weight_decay: Optional[float] = None
    schedule: Optional[str] = None  # cosine (per step, to 0) or cosine-epochs (the references, per epoch)
    momentum: float = 0.9
    bottleneck: int = 64  # adapter width (PILOT ffn_num)
    adapter_scale: float = 0.1  # fixed output scale (PILOT ffn_adapter_scalar)
    adapter_dropout: float = 0.1  # on the bottleneck, while training
    prompt_tokens: int = 5  # VPT's prompts at the input (shallow) or per block (deep): RevisitingCIL's and RanPAC's 5

    def check_first_session(self, min_epochs: int, uses_petl: bool = True) -> None:
        """Validate the first-session fields (after the strategy's preset filled them); `petl` only where the
        strategy trains a first-session module (APER, RanPAC), else it must be unset (EASE, MOS, TUNA)."""
        if self.schedule is None:
            object.__setattr__(self, "schedule", "cosine")
        self.resolve_recipe()
        if uses_petl:
            require(self.petl in PETLS.names(), "petl", f"one of {', '.join(PETLS.names())}", self.petl)
        else:
            require(self.petl is None, "petl", "not set: this strategy trains its own adapters (remove the key)",
                    self.petl)
        require(self.epochs >= min_epochs, "epochs", f">= {min_epochs}", self.epochs)
        require(self.batch_size >= 1, "batch_size", ">= 1", self.batch_size)
        require(self.lr > 0, "lr", "> 0", self.lr)
        require(self.schedule in SCHEDULES, "schedule", f"one of {', '.join(SCHEDULES)}", self.schedule)
        require(self.weight_decay >= 0, "weight_decay", ">= 0", self.weight_decay)
        require(0 <= self.momentum < 1, "momentum", "in [0, 1)", self.momentum)
        require(self.bottleneck >= 1, "bottleneck", ">= 1", self.bottleneck)
        require(self.adapter_scale > 0, "adapter_scale", "> 0", self.adapter_scale)
        require(0 <= self.adapter_dropout < 1, "adapter_dropout", "in [0, 1)", self.adapter_dropout)
        require(self.prompt_tokens >= 1, "prompt_tokens", ">= 1", self.prompt_tokens)

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


class FirstSessionModule(nn.Module):
    """What trains in the first session, attached to the backbone the strategy owns (forward hooks, by default) or
    beside it. Its parameters are the only trainable ones of the strategy that holds it."""

    def switches(self) -> list[nn.Module]:
        """The hooked modules whose `bypass` gives the backbone back its pre-trained computation."""
        return []

    def adapted(self, backbone: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """The adapted network's features."""
        return backbone(x)

    def pretrained(self, backbone: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """The pre-trained network's features."""
        with bypassed(self.switches()):
            return backbone(x)


PETLS: Registry[Callable[[nn.Module, FirstSessionConfig], FirstSessionModule]] = Registry("first-session module")
register_first_session = PETLS.register


@register_first_session("adapter")
class FirstSessionAdapters(FirstSessionModule):
    """One AdaptFormer adapter per block of `backbone`, attached on construction."""

    def __init__(self, backbone: nn.Module, config: FirstSessionConfig) -> None:
        super().__init__()
        dim = backbone.num_features
        self.adapters = nn.ModuleList(
            Adapter(dim, config.bottleneck, position="mlp", activation="relu", scale=config.adapter_scale,
                    dropout=config.adapter_dropout) for _ in backbone.blocks)
        for adapter, block in zip(self.adapters, backbone.blocks):
            adapter.attach(block)

    def switches(self) -> list[nn.Module]:
        return list(self.adapters)


@register_first_session("finetune")
class FineTunedCopy(FirstSessionModule):
    """A copy of the whole backbone, every weight trainable; the backbone stays the pre-trained network (the
    reference's frozen branch is a freshly loaded pre-trained ViT, `MultiBranchCosineIncrementalNet`)."""

    def __init__(self, backbone: nn.Module, config: FirstSessionConfig) -> None:
        super().__init__()
        self.tuned = copy.deepcopy(backbone).requires_grad_(True)

    def adapted(self, backbone: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return self.tuned(x)


def adapt_first_session(owner: nn.Module, module: FirstSessionModule, backbone: nn.Module, task: Task,
                        config: FirstSessionConfig, runtime: Runtime) -> None:
    """Train `module` (the only trainable parameters `owner`, the strategy, holds) with a fresh cosine head on the
    first `task`; the head is dropped afterwards."""
    train_with_cosine_head(owner, lambda x: module.adapted(backbone, x), backbone.num_features, task, config, runtime,
                           desc=f"first-session {config.petl} {task.name}")


def train_with_cosine_head(owner: nn.Module, features: Callable[[torch.Tensor], torch.Tensor], dim: int, task: Task,
                           config: FirstSessionConfig, runtime: Runtime, desc: str) -> None:
    """Train what `owner` (the strategy) holds trainable, which `features` runs, with a fresh cosine head over
    `task`'s classes on `task`; the head is dropped afterwards. Train mode exactly where parameters train."""
    head = CosineHead(dim, len(task.labels)).to(runtime.device)
    position = local_units(task.labels, task.num_outputs, runtime.device)[1]
    set_train_modes(owner)
    head.train()
    loss = lambda x, y: F.cross_entropy(head(features(x)), position[y])  # noqa: E731
    parameters = [p for p in owner.parameters() if p.requires_grad] + list(head.parameters())
    fit(loss, parameters, training_data(task, runtime), config.train_config(), runtime, desc=desc)
    owner.eval()
