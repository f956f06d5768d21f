"""APER with an adapter (also "ADAM"; Zhou, Cai, Ye, Zhan; "Revisiting Class-Incremental Learning with Pre-Trained
Models: Generalizability and Adaptivity are All You Need", IJCV 2024; arXiv 2303.07338), after LAMDA-PILOT
`models/aper_adapter.py`, `utils/inc_net.py` (`MultiBranchCosineIncrementalNet`), `exps/aper_aperpter*.json`.

1. First task only: AdaptFormer adapters in every block of the frozen ViT train with a cosine head
   (`strategies._first_session`); the head is then discarded and the adapters never change again.
2. Every task (the first included): each class's prototype is the mean, over its training images under the test
   transform, of the concatenation [frozen features, adapted features] (2d numbers); logits are cosines to the
   prototypes (`strategies._prototypes`). Each image costs two forward passes (frozen and adapted), which the FLOP
   count includes.

`features` (what retention protocols score with the pre-training head) are the adapted network's d-dim features.

Presets (`preset:`, filling `epochs`, `batch_size`, `lr`, `weight_decay` and the recipe where not set): `reference`
(ViT-B/16 on CIFAR-100, the official RevisitingCIL@a2e6b71 `exps/aper_adapter/cifar224_5_5_vit-b_adapter.json`: 20
epochs, batch 48, lr 0.01, wd 5e-4), `reference-imagenet-r` (its `imagenetr_5_5_vit-b_adapter.json`: 20 epochs,
batch 24, lr 0.05, wd 5e-3) and `mini` (default: 5 epochs, batch 16, lr 0.05, wd 5e-4: mini-split-digits's first
task has ~290 images, so the reference's CIFAR settings would move the adapters by almost nothing in its ~30 steps).
The `reference*` presets run the reference's recipe (benchmark/recipe.py): fp32, [0, 1] pixels without mean/std,
RandomResizedCrop scale (0.05, 1), test Resize(256) + CenterCrop(224) (`input: unnormalised`, RevisitingCIL
`utils/data.py:69-103`), the lr cosine stepped per epoch (`schedule: cosine-epochs`, `models/aper_adapter.py:111,
144`); the mini preset keeps the suite's pipeline and anneals per step.

Deviations from the reference:
- The adapters are attached with forward hooks (`strategies._adapter`); the reference builds a second ViT class.
  The frozen branch is the same backbone with the adapters bypassed, not a second copy of the weights.
- Domain-incremental streams (not in the paper): prototypes average over all domains' images of a class.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from benchmark.config import apply_preset
from benchmark.sharing import shared_pass
from benchmark.streams import Task
from strategies._first_session import (PILOT_RECIPE, FirstSessionAdapters, FirstSessionConfig,
                                        train_with_cosine_head)
from strategies._prototypes import ClassPrototypes, task_features
from strategies.base import Strategy, register

PRESETS = {
    "mini": dict(epochs=5, batch_size=16, lr=0.05, weight_decay=5e-4),
    "reference": dict(epochs=20, batch_size=48, lr=0.01, weight_decay=5e-4, **PILOT_RECIPE),
    "reference-imagenet-r": dict(epochs=20, batch_size=24, lr=0.05, weight_decay=5e-3, **PILOT_RECIPE),
}


@dataclass(frozen=True)
class APERConfig(FirstSessionConfig):
    preset: str = "mini"  # fills the fields left null: mini, reference (CIFAR-100), reference-imagenet-r

    def __post_init__(self) -> None:
        apply_preset(self, PRESETS)
        self.check_first_session(min_epochs=1)


@register("aper")
class APER(Strategy):
    Config = APERConfig
    feature_free = ("prototypes",)
    shares_with = "first-session adapters"  # RanPAC's phase 1 adapts the same way (equal adapters: equal features)

    def __init__(self, backbone: nn.Module, config: APERConfig, runtime) -> None:
        super().__init__(backbone, config, runtime)
        self.backbone.requires_grad_(False)
        self.adapters = FirstSessionAdapters(self.backbone, config).to(runtime.device)
        self.prototypes = ClassPrototypes(2 * self.feature_dim).to(runtime.device)

    def train_task(self, task: Task) -> None:
        if task.index == 0:
            train_with_cosine_head(self, self.backbone, task, self.config, self.runtime)
        self.eval()
        features, labels = task_features(self.concatenated_features, task.train_unaugmented, self.runtime)
        self.prototypes.add(features, labels, task.num_outputs)

    def concatenated_features(self, x: torch.Tensor) -> torch.Tensor:
        """[frozen backbone's features, adapted backbone's features]: two forward passes, shared with earlier
        passes on the same batch while the adapters stay as they are (after the first task: for good)."""
        return shared_pass(self, "[frozen, adapted] features", self._concatenate, x, self.runtime.share,
                           self.runtime.context, skip=self.feature_free)

    def _concatenate(self, x: torch.Tensor) -> torch.Tensor:
        with self.adapters.bypassed():
            frozen = self.backbone(x)
        return torch.cat([frozen, self.backbone(x)], dim=1)

    def predict(self, x: torch.Tensor, task_id: Optional[int] = None) -> torch.Tensor:
        return self.prototypes(self.concatenated_features(x))

    def feature_identity(self) -> str:
        """The adapted backbone's features, a function of the modules alone (backbone and adapters)."""
        return ""
