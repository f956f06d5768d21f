"""EASE: Expandable Subspace Ensemble for Pre-Trained Model-Based Class-Incremental Learning (Zhou, Sun, Ye, Zhan;
CVPR 2024; arXiv 2403.12030), after the official code sun-hailong/CVPR24-Ease@6d67508 (`models/ease.py`,
`backbone/vit_ease.py`, `backbone/linears.py` `forward_reweight`, `utils/inc_net.py` `EaseNet`, `exps/ease_*.json`).

Each task t, in `train_task`:
1. A new set of AdaptFormer adapters (one per block, bottleneck 64, ReLU, dropout 0.1, scale 0.1;
   `strategies._adapter_bank`) on the frozen ViT: the task's subspace. It trains with a fresh cosine head over the
   task's classes (`proxy_fc`, sigma learnable), cross-entropy over those classes, SGD momentum 0.9
   (`strategies._first_session.train_with_cosine_head`, models/ease.py:253-360); it is frozen for good when the
   next task adds its set.
2. Prototypes: every set's features (one pass per set, [CLS] after the final norm) of the task's training images
   under the test transform; each class of the task gets its mean in every subspace 0..t (models/ease.py:60-99).
3. Prototype complement (semantic-guided mapping, `strategies._prototypes.complement`; models/ease.py:176-226, the
   official configs' `recalc_sim: true`): a class of an earlier task i has no images in a later subspace j; its
   prototype there is the softmax(cosine)-weighted sum of the subspace-j prototypes of the classes that do have
   images there (the classes of tasks j..t), the weights being the cosines between the old class's prototype and
   theirs in the old class's own subspace i. Recomputed from the stored real prototypes after every task.
Inference: the features of every set (t + 1 passes); the logit of a class of task i is
cos(f_i, p_ci) + (alpha / t) * sum_{j != i} cos(f_j, p_cj) (cosines per subspace, `forward_reweight`, alpha 0.1; the
head's sigma stays 1: it is not trained).

`features` (what retention protocols score with the pre-training head) are the newest set's network's.

Presets (`preset:`, filling `epochs`, `batch_size`, `lr`, `weight_decay` and the recipe where not set): `reference`
(CIFAR-100 B0-Inc5, exps/ease_cifar_in21k.json: 20 epochs, batch 48, lr 0.025, wd 5e-4), `reference-imagenet-r`
(ImageNet-R B0-Inc20, exps/ease_inr_in21k.json: 20 epochs, batch 16, lr 0.05, wd 5e-3) and `mini` (default,
CPU-sized: 2 epochs, batch 16, lr 0.05, wd 5e-4). The `reference*` presets run the reference's recipe
(benchmark/recipe.py): fp32; [0, 1] pixels, RandomResizedCrop scale (0.05, 1), test Resize(256, bicubic) +
CenterCrop(224) (`input: unnormalised`, utils/data.py:95-119, 121-147, 208-222); the lr cosine stepped per epoch to
`min_lr` 0 (`schedule: cosine-epochs`, models/ease.py:295-297, 347-348).

Deviations from the reference:
- Adapters attach by forward hooks to timm's ViT (the reference rebuilds the ViT with separate q, k, v
  projections); a set not in use is bypassed.
- The mini preset anneals the lr per step and keeps the suite's input pipeline and precision.
- Prototype sums are kept in float64.
- Domain-incremental streams (not in the paper): a class's prototype in a subspace averages all its images seen
  since that subspace was added (no complement is needed: every class has images everywhere), and a class's own
  subspace, weighted 1, is that of the latest task that brought it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional

import torch
from torch import nn

from benchmark.config import apply_preset, require
from benchmark.streams import Task
from strategies._adapter_bank import AdapterBank, stored_sets
from strategies._first_session import PILOT_RECIPE, FirstSessionConfig, train_with_cosine_head
from strategies._prototypes import ClassPrototypes, complement, cosine_logits
from strategies.base import Strategy, register

PRESETS = {
    "mini": dict(epochs=2, batch_size=16, lr=0.05, weight_decay=5e-4),
    "reference": dict(epochs=20, batch_size=48, lr=0.025, weight_decay=5e-4, **PILOT_RECIPE),
    "reference-imagenet-r": dict(epochs=20, batch_size=16, lr=0.05, weight_decay=5e-3, **PILOT_RECIPE),
}


@dataclass(frozen=True)
class EASEConfig(FirstSessionConfig):
    preset: str = "mini"  # fills the fields left null: mini, reference (CIFAR-100), reference-imagenet-r
    alpha: float = 0.1  # weight of a class's cosines in the other subspaces, divided by their number (official 0.1)

    def __post_init__(self) -> None:
        apply_preset(self, PRESETS)
        self.check_first_session(min_epochs=1, uses_petl=False)
        require(self.alpha >= 0, "alpha", ">= 0", self.alpha)


@register("ease")
class EASE(Strategy):
    Config = EASEConfig
    feature_free = ("prototypes", "classifier", "class_tasks")

    def __init__(self, backbone: nn.Module, config: EASEConfig, runtime) -> None:
        super().__init__(backbone, config, runtime)
        self.backbone.requires_grad_(False)
        self.bank = AdapterBank(self.backbone, config.bottleneck, config.adapter_scale, config.adapter_dropout)
        self.prototypes = nn.ModuleList()  # per subspace: the real prototypes (sums and counts of images)
        dim, device = self.feature_dim, runtime.device
        self.register_buffer("classifier", torch.zeros(0, 0, dim, device=device))  # (classes, subspaces, d)
        self.register_buffer("class_tasks", torch.zeros(0, dtype=torch.long, device=device))  # each class's subspace

    def train_task(self, task: Task) -> None:
        index = len(self.bank)
        self.bank.add()
        with self.bank.selected(index):
            train_with_cosine_head(self, self.backbone, self.backbone.num_features, task, self.config, self.runtime,
                                   desc=f"adapters with a cosine head {task.name}")
        self.prototypes.append(ClassPrototypes(self.feature_dim).to(self.runtime.device))
        self.eval()
        for subspace, prototypes in enumerate(self.prototypes):
            features, labels = self.bank.task_features(self.backbone, task, subspace, self.runtime)
            prototypes.add(features, labels, task.num_outputs)
        grown = torch.cat([self.class_tasks, self.class_tasks.new_zeros(task.num_outputs - len(self.class_tasks))])
        grown[list(task.labels)] = index
        self.class_tasks = grown
        self.classifier = self.complemented_prototypes()

    @torch.no_grad()
    def complemented_prototypes(self) -> torch.Tensor:
        """(classes, subspaces, d): each class's mean in every subspace where it has images, and the complement
        (from its own subspace's similarities) where it has none."""
        means = torch.stack([prototypes.means for prototypes in self.prototypes], dim=1)
        present = torch.stack([prototypes.counts > 0 for prototypes in self.prototypes], dim=1)
        for subspace in range(means.shape[1]):
            for home in self.class_tasks[~present[:, subspace]].unique().tolist():
                rows = ~present[:, subspace] & (self.class_tasks == home)
                anchors = present[:, subspace] & present[:, home]
                if anchors.any():
                    means[rows, subspace] = complement(means[rows, home], means[anchors, home],
                                                       means[anchors, subspace])
        return means.float()

    def subspace_weights(self, subspaces: int) -> torch.Tensor:
        """(subspaces, classes): 1 in each class's own subspace, alpha / (subspaces - 1) in the others."""
        own = torch.arange(subspaces, device=self.class_tasks.device)[:, None] == self.class_tasks[None, :]
        other = self.config.alpha / (subspaces - 1) if subspaces > 1 else 0.0
        return torch.where(own, 1.0, other)

    def every_set(self, x: torch.Tensor) -> torch.Tensor:
        """(sets, n, d): each subspace's features, one pass per set, shared with equal passes on the same batch."""
        return self.bank.every_set(self.backbone, x, self.runtime)

    def predict(self, x: torch.Tensor, task_id: Optional[int] = None) -> torch.Tensor:
        every = self.every_set(x)
        if not len(self.class_tasks):  # nothing learnt yet: no class to score
            return every.new_zeros(every.shape[1], 0)
        with torch.autocast(every.device.type, enabled=False):  # float32: bf16 rounds nearly equal cosines together
            cosines = torch.stack([cosine_logits(features.float(), self.classifier[:, subspace])
                                   for subspace, features in enumerate(every)])
            return (cosines * self.subspace_weights(len(every))[:, None, :]).sum(0)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The newest set's network (the pre-trained one before the first task)."""
        return self.bank.features(self.backbone, x, len(self.bank) - 1 if len(self.bank) else None)

    def prepare_to_load(self, state: Mapping[str, torch.Tensor]) -> None:
        """Rebuild the stored tasks' sets and their prototypes, so that their tensors can load."""
        self.bank.grow_to(stored_sets(state, "bank"))
        while len(self.prototypes) < len(self.bank):
            self.prototypes.append(ClassPrototypes(self.feature_dim).to(self.runtime.device))
