"""APER (also "ADAM"; Zhou, Cai, Ye, Zhan; "Revisiting Class-Incremental Learning with Pre-Trained Models:
Generalizability and Adaptivity are All You Need", IJCV 2024; arXiv 2303.07338), after the official code,
zhoudw-zdw/RevisitingCIL@a2e6b71 (`models/aper_adapter.py`, `aper_ssf.py`, `aper_vpt.py`, `aper_finetune.py`;
`utils/inc_net.py` `MultiBranchCosineIncrementalNet`; `exps/aper_*/`), and LAMDA-PILOT `models/aper_adapter.py`.

1. First task only: a first-session module (`petl`, `strategies._first_session`) trains on the frozen ViT with a
   cosine head; the head is then discarded and the module never changes again. The paper's five variants:
   `adapter` (default: AdaptFormer adapters in every block), `ssf` (scale and shift of features, `strategies._ssf`),
   `vpt_shallow` and `vpt_deep` (prompt tokens at the input or in every block, `strategies._vpt`) and `finetune`
   (every weight of a copy of the ViT).
2. Every task (the first included): each class's prototype is the mean, over its training images under the test
   transform, of the concatenation [pre-trained features, adapted features] (2d numbers); logits are cosines to the
   prototypes (`strategies._prototypes`). Each image costs two forward passes (pre-trained and adapted), which the
   FLOP count includes.

`features` (what retention protocols score with the pre-training head) are the adapted network's d-dim features.
A fresh adapter or fine-tuned copy computes the pre-trained features; SSF (scales drawn around 1, shifts around 0)
and VPT (zero prompts, which still take part in attention) do not, before training as in the reference.

Presets (`preset:`, filling `epochs`, `batch_size`, `lr`, `weight_decay` and the recipe where not set), per `petl`,
from RevisitingCIL@a2e6b71 `exps/aper_<petl>/cifar224_5_5_vit-b_<petl>.json` (`reference`, ViT-B/16 on CIFAR-100)
and `imagenetr_5_5_vit-b_<petl>.json` (`reference-imagenet-r`); epochs, batch, lr, wd:

| petl | `reference` | `reference-imagenet-r` |
| --- | --- | --- |
| adapter | 20, 48, 0.01, 5e-4 | 20, 24, 0.05, 5e-3 |
| ssf, vpt_shallow | 20, 48, 0.01, 5e-4 | 20, 48, 0.01, 5e-4 |
| vpt_deep | 5, 16, 0.05, 5e-4 | 5, 16, 0.05, 5e-4 |
| finetune | 20, 48, 0.01, 5e-2 (the run of the log, below) | 5, 128, 0.01, 5e-4 |

VPT uses 5 prompt tokens in every json. The `reference*` presets run the reference's recipe (benchmark/recipe.py):
fp32, [0, 1] pixels without mean/std, RandomResizedCrop scale (0.05, 1), test Resize(256) + CenterCrop(224) (`input:
unnormalised`, RevisitingCIL `utils/data.py:69-103`), the lr cosine stepped per epoch to 0 (`schedule:
cosine-epochs`, `CosineAnnealingLR(T_max=tuned_epoch, eta_min=min_lr)` with `min_lr: 0` in every json,
`models/aper_adapter.py:111, 144`, `aper_ssf.py:126, 160`, `aper_vpt.py:118, 153`, `aper_finetune.py:95, 128`).
`mini` (default) keeps the suite's pipeline and anneals per step: 5 epochs, batch 16, lr 0.05, wd 5e-4 for the
parameter-efficient modules (mini-split-digits's first task has ~290 images, so the reference's CIFAR settings would
move them by almost nothing in its ~30 steps); `finetune` 5 epochs, batch 16, lr 0.01 (every weight moves).

Deviations from the reference:
- The modules are attached with forward hooks (`strategies._adapter`, `_ssf`, `_vpt`); the reference builds a
  second ViT class for each. The pre-trained branch is the same backbone with the module bypassed, not a second
  copy of the weights (`finetune`: the backbone itself, beside the fine-tuned copy).
- `finetune`'s `reference` preset follows the run that wrote RevisitingCIL's CIFAR log
  (logs/aper_finetune/cifar224/exp_1993_pretrained_vit_b16_224_in21k.log:202-220, the second of its two runs: 20
  epochs, batch 48, lr 0.01, wd 0.05), not its json (5 epochs, batch 128, wd 5e-4), so that it reproduces the
  published number; the ImageNet-R log's run is its json's.
- Domain-incremental streams (not in the paper): prototypes average over all domains' images of a class.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from benchmark.config import apply_preset, require
from benchmark.sharing import shared_pass
from benchmark.streams import Task
from strategies._first_session import PETLS, PILOT_RECIPE, FirstSessionConfig, adapt_first_session
from strategies._prototypes import ClassPrototypes, task_features
from strategies.base import Strategy, register

MINI = dict(epochs=5, batch_size=16, lr=0.05, weight_decay=5e-4)
CIFAR_SETTINGS = dict(epochs=20, batch_size=48, lr=0.01, weight_decay=5e-4, **PILOT_RECIPE)  # ssf, vpt_shallow, adapter
DEEP_PROMPTS = dict(epochs=5, batch_size=16, lr=0.05, weight_decay=5e-4, **PILOT_RECIPE)
PRESETS = {  # petl -> preset -> settings (the table in the docstring)
    "adapter": {"mini": MINI, "reference": CIFAR_SETTINGS,
                "reference-imagenet-r": dict(epochs=20, batch_size=24, lr=0.05, weight_decay=5e-3, **PILOT_RECIPE)},
    "ssf": {"mini": MINI, "reference": CIFAR_SETTINGS, "reference-imagenet-r": CIFAR_SETTINGS},
    "vpt_shallow": {"mini": MINI, "reference": CIFAR_SETTINGS, "reference-imagenet-r": CIFAR_SETTINGS},
    "vpt_deep": {"mini": MINI, "reference": DEEP_PROMPTS, "reference-imagenet-r": DEEP_PROMPTS},
    "finetune": {"mini": dict(MINI, lr=0.01),
                 "reference": dict(epochs=20, batch_size=48, lr=0.01, weight_decay=5e-2, **PILOT_RECIPE),
                 "reference-imagenet-r": dict(epochs=5, batch_size=128, lr=0.01, weight_decay=5e-4, **PILOT_RECIPE)},
}


@dataclass(frozen=True)
class APERConfig(FirstSessionConfig):
    preset: str = "mini"  # fills the fields left null, per petl: mini, reference (CIFAR-100), reference-imagenet-r

    def __post_init__(self) -> None:
        if self.petl is None:
            object.__setattr__(self, "petl", "adapter")
        require(self.petl in PRESETS, "petl", f"one of {', '.join(PRESETS)}", self.petl)
        apply_preset(self, PRESETS[self.petl])
        self.check_first_session(min_epochs=1)


@register("aper")
class APER(Strategy):
    Config = APERConfig
    feature_free = ("prototypes",)
    shares_with = "first-session adapters"  # RanPAC's phase 1 adapts the same way (equal modules: equal features)

    def __init__(self, backbone: nn.Module, config: APERConfig, runtime) -> None:
        super().__init__(backbone, config, runtime)
        self.backbone.requires_grad_(False)
        self.first_session = PETLS.get(config.petl)(self.backbone, config).to(runtime.device)
        self.prototypes = ClassPrototypes(2 * self.feature_dim).to(runtime.device)

    def train_task(self, task: Task) -> None:
        if task.index == 0:
            adapt_first_session(self, self.first_session, self.backbone, task, self.config, self.runtime)
        self.eval()
        features, labels = task_features(self.concatenated_features, task.train_unaugmented, self.runtime)
        self.prototypes.add(features, labels, task.num_outputs)

    def concatenated_features(self, x: torch.Tensor) -> torch.Tensor:
        """[pre-trained features, adapted features]: two forward passes, shared with earlier passes on the same batch
        while the first-session module stays as it is (after the first task: for good)."""
        return shared_pass(self, "[frozen, adapted] features", self._concatenate, x, self.runtime.share,
                           self.runtime.context, skip=self.feature_free)

    def _concatenate(self, x: torch.Tensor) -> torch.Tensor:
        pretrained = self.first_session.pretrained(self.backbone, x)
        return torch.cat([pretrained, self.first_session.adapted(self.backbone, x)], dim=1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.first_session.adapted(self.backbone, x)

    def predict(self, x: torch.Tensor, task_id: Optional[int] = None) -> torch.Tensor:
        return self.prototypes(self.concatenated_features(x))

    def feature_identity(self) -> str:
        """The adapted network's features, a function of the modules alone (backbone and first-session module)."""
        return ""
