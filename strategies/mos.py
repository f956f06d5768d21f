"""MOS: Model Surgery for Pre-Trained Model-Based Class-Incremental Learning (Sun, Zhou, Zhao, Gan, Zhan, Ye; AAAI
2025; arXiv 2412.09441), after the official code sun-hailong/AAAI25-MOS@8d5e07c (`models/mos.py`,
`backbone/vit_mos.py`, `utils/inc_net.py` `MOSNet`, `exps/mos_*.json`).

Each task t, in `train_task`:
1. Adapter set t (one AdaptFormer adapter per block, bottleneck 16, ReLU, dropout 0.1, scale 0.1;
   `strategies._adapter_bank`) starts from set t - 1's weights (the reference trains one `cur_adapter` on from task
   to task and keeps a copy per task; set 0 starts fresh) and trains with the linear head (one growing head, nn.Linear's
   initialisation: the reference's ViT `head`): SGD momentum 0.9, the adapters at lr, the head at lr / 10, weight
   decay on both (models/mos.py:118-140); loss = cross-entropy over the task's classes (the others' logits at -inf,
   :163-166) + `contrast` (0.1) x InfoNCE of the batch's features against the stored class means (every row of
   [means; features] (M) must pick itself among M M^T / 0.8, :335-355).
2. Adapter merging: after every optimiser step from task 1 on, set t <- (1 - m) set t + m * mean(sets 0..t-1), m 0.1
   (`strategies._adapter_bank.ema_merge`; :173-175, backbone/vit_mos.py:303-346). Set t is frozen when the next
   task adds its set.
3. Class statistics: mean and covariance (+1e-4 I) of set t's features of each class's training images (test
   transform); from task 1 on, classifier alignment: the head trains on `ca_samples` (5 x batch) features drawn per
   class from every stored Gaussian, `ca_epochs` (30) epochs, SGD lr 0.005 momentum 0.9, cosine per epoch
   (`strategies._gaussians`; :198-333).
4. Prototypes for retrieval: class means of set 0's features (the reference's `forward_orig`, MOSNet uses adapter 0),
   a cosine classifier (sigma 1).
Inference (self-refined retrieval, training-free; models/mos.py:357-415): set 0's prototype logits predict a class,
whose task picks a set; the head reads that set's features and its predicted class's task picks the next set, up to
`refine_steps` (4) look-ups or until the set stays the same; the logits are softmax(those head logits) +
softmax((t + 1) x the prototype logits) (`ensemble`). Every set's features are computed (t + 1 passes, the
reference's cost too). `selected_task` is the set whose features gave the head logits.

`features` (what retention protocols score with the pre-training head) are set 0's network's, the task predictor.

Presets (`preset:`): `reference` (CIFAR-100 B0-Inc5, exps/mos_cifar_in21k.json: 20 epochs, batch 48, lr 0.03, wd
5e-4, 240 samples per class), `reference-imagenet-r` (ImageNet-R B0-Inc20, exps/mos_inr_in21k.json: 10 epochs, batch
16, lr 0.05, wd 5e-3, 80 samples) and `mini` (default, CPU-sized: 2 epochs, batch 16, lr 0.03, wd 5e-4, 5 alignment
epochs of 80 samples). The `reference*` presets run the reference's recipe (benchmark/recipe.py): fp32; [0, 1] pixels,
RandomResizedCrop scale (0.05, 1), test Resize(256, bicubic) + CenterCrop(224) (`input: unnormalised`,
utils/data.py:95-119, 121-147, 208-222); the lr cosine stepped per epoch to 0 (`schedule: cosine-epochs`, :142-150).

Deviations from the reference:
- Merging is applied once per optimiser step, as the paper's equation and `adapter_merge` (models/mos.py:174). The
  reference also calls `reweight_adapter`, which overwrites the adapters' weights, once per block inside every
  forward pass (backbone/vit_mos.py:360-379): 1 + depth pulls per training step (13 on ViT-B: 1 - 0.9^13 = 75% of the
  way to the earlier sets' mean instead of 10%), in the passes that compute class statistics (so the next task starts
  from the pulled weights), and in every evaluation pass on the stored set it evaluates, so that after a few test
  batches set i >= 1 holds the mean of sets 0..i-1 rather than what task i trained. Not reproduced: evaluation here
  does not change the network.
- Adapters attach by forward hooks to timm's ViT; one growing head (the reference allocates all classes' rows at
  the start; rows of classes not yet seen are never read).
- All Gaussians are sampled at once (`strategies._gaussians`); statistics in float64, stored in float32.
- The mini preset anneals the lr per step and keeps the suite's input pipeline and precision.
- Domain-incremental streams (not in the paper): a class's task, for retrieval, is the latest task that brought it;
  every task stores a Gaussian per class.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import partial
from typing import Any, Mapping, Optional

import torch
import torch.nn.functional as F
from torch import nn

from benchmark.config import apply_preset, require
from benchmark.streams import Task
from strategies._adapter_bank import AdapterBank, ema_merge, merged_state, stored_sets
from strategies._first_session import PILOT_RECIPE, FirstSessionConfig
from strategies._gaussians import COVARIANCES, ClassGaussians
from strategies._heads import HEAD_INITS, GrowingClassifier
from strategies._loop import TrainConfig, fit, task_cross_entropy, training_data
from strategies._prototypes import ClassPrototypes
from strategies._tuned import set_train_modes
from strategies.base import Strategy, register

PRESETS = {
    "mini": dict(epochs=2, batch_size=16, lr=0.03, weight_decay=5e-4, ca_epochs=5, ca_samples=80),
    "reference": dict(epochs=20, batch_size=48, lr=0.03, weight_decay=5e-4, ca_epochs=30, ca_samples=240,
                      **PILOT_RECIPE),
    "reference-imagenet-r": dict(epochs=10, batch_size=16, lr=0.05, weight_decay=5e-3, ca_epochs=30, ca_samples=80,
                                 **PILOT_RECIPE),
}


@dataclass(frozen=True)
class MOSConfig(FirstSessionConfig):
    preset: str = "mini"  # fills the fields left null: mini, reference (CIFAR-100), reference-imagenet-r
    bottleneck: int = 16  # adapter width (ffn_num)
    head_lr_scale: float = 0.1  # the head trains at lr * this (the reference's second parameter group)
    head_init: str = "linear"  # new head rows: nn.Linear's (the reference's ViT head)
    contrast: float = 0.1  # weight of the InfoNCE term (reg)
    temperature: float = 0.8  # of the InfoNCE similarities
    merge_momentum: float = 0.1  # m of the adapter merging (adapter_momentum); 0: no merging
    ca_epochs: Optional[int] = None  # classifier-alignment epochs per task (crct_epochs); 0: none
    ca_lr: float = 0.005
    ca_samples: Optional[int] = None  # features drawn per class and epoch, also the batch (5 x batch_size)
    covariance: str = "full"  # full (the reference) or diagonal
    refine_steps: int = 4  # head look-ups of the self-refined retrieval (MAX_ITER)
    ensemble: bool = True  # add softmax((t + 1) x prototype logits) to the refined head's softmax

    def __post_init__(self) -> None:
        apply_preset(self, PRESETS)
        self.check_first_session(min_epochs=1, uses_petl=False)
        require(0 < self.head_lr_scale <= 1, "head_lr_scale", "in (0, 1]", self.head_lr_scale)
        require(self.head_init in HEAD_INITS, "head_init", f"one of {', '.join(HEAD_INITS)}", self.head_init)
        require(self.contrast >= 0, "contrast", ">= 0", self.contrast)
        require(self.temperature > 0, "temperature", "> 0", self.temperature)
        require(0 <= self.merge_momentum <= 1, "merge_momentum", "in [0, 1]", self.merge_momentum)
        require(self.ca_epochs >= 0, "ca_epochs", ">= 0", self.ca_epochs)
        require(self.ca_lr > 0, "ca_lr", "> 0", self.ca_lr)
        require(self.ca_samples >= 2, "ca_samples", ">= 2", self.ca_samples)
        require(self.covariance in COVARIANCES, "covariance", f"one of {', '.join(COVARIANCES)}", self.covariance)
        require(self.refine_steps >= 1, "refine_steps", ">= 1", self.refine_steps)

    def train_config(self) -> TrainConfig:
        return dataclasses.replace(super().train_config(), head_init=self.head_init)


@register("mos")
class MOS(Strategy):
    Config = MOSConfig
    feature_free = ("head", "prototypes", "statistics", "class_tasks")
    selects_task = True

    def __init__(self, backbone: nn.Module, config: MOSConfig, runtime) -> None:
        super().__init__(backbone, config, runtime)
        self.backbone.requires_grad_(False)
        dim, device = self.feature_dim, runtime.device
        self.bank = AdapterBank(self.backbone, config.bottleneck, config.adapter_scale, config.adapter_dropout)
        self.head = GrowingClassifier(dim, config.head_init).to(device)
        self.prototypes = ClassPrototypes(dim).to(device)  # of set 0's features: the task predictor
        self.statistics = ClassGaussians(dim, config.covariance).to(device)
        self.register_buffer("class_tasks", torch.zeros(0, dtype=torch.long, device=device))

    def train_task(self, task: Task) -> None:
        index = self.bank.add_continuing()
        self.head.grow(task.num_outputs)
        self.train_adapters(task, index)
        self.eval()
        features, labels = self.bank.task_features(self.backbone, task, index, self.runtime)
        self.statistics.add(features, labels, task.labels, index)
        if index > 0 and self.config.ca_epochs:
            self.align_head(index)
        if index > 0:  # the prototypes are of set 0's features
            features, labels = self.bank.task_features(self.backbone, task, 0, self.runtime)
        self.prototypes.add(features, labels, task.num_outputs)
        grown = torch.cat([self.class_tasks, self.class_tasks.new_zeros(task.num_outputs - len(self.class_tasks))])
        grown[list(task.labels)] = index
        self.class_tasks = grown

    def train_adapters(self, task: Task, index: int) -> None:
        """Set `index` and the head on the task's local cross-entropy plus the InfoNCE term; from the second task on,
        the set is merged with the earlier ones after every step."""
        config, adapters = self.config, self.bank.sets[index]
        groups = [{"params": list(adapters.parameters()), "lr": config.lr},
                  {"params": list(self.head.parameters()), "lr": config.lr * config.head_lr_scale}]

        def loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            features = self.backbone(x)
            ce = task_cross_entropy(self.head(features), y, task, "local")
            return ce + config.contrast * self.contrastive(features)

        merge = partial(self.merge, index) if index and config.merge_momentum else None
        with self.bank.selected(index):
            set_train_modes(self)
            fit(loss, groups, training_data(task, self.runtime), config.train_config(), self.runtime,
                desc=f"MOS {task.name}", after_step=merge)

    def contrastive(self, features: torch.Tensor) -> torch.Tensor:
        """InfoNCE over M = [stored class means; the batch's features]: row i of M M^T / temperature must pick i."""
        rows = torch.cat([self.statistics.means.to(features.dtype), features])
        similarities = rows @ rows.T / self.config.temperature
        return F.cross_entropy(similarities, torch.arange(len(rows), device=rows.device))

    @torch.no_grad()
    def merge(self, index: int) -> None:
        """Set `index` <- (1 - m) set `index` + m mean(sets 0..index-1)."""
        momentum = self.config.merge_momentum
        rule = lambda tensors: ema_merge(tensors[-1], tensors[:-1], momentum)  # noqa: E731
        self.bank.sets[index].load_state_dict(merged_state(self.bank.sets[: index + 1], rule))

    def align_head(self, index: int) -> None:
        config = self.config
        loss = lambda f, y: F.cross_entropy(self.head(f), y)  # noqa: E731
        self.statistics.align(loss, self.head.parameters(), config.ca_samples, config.ca_epochs, config.ca_epochs,
                              config.ca_lr, config.momentum, config.weight_decay, self.runtime,
                              f"MOS alignment task {index}")

    def every_set(self, x: torch.Tensor) -> torch.Tensor:
        """(sets, n, d): each set's features, shared with equal passes on the same batch (logits and selection)."""
        return self.bank.every_set(self.backbone, x, self.runtime)

    def retrieve(self, every: torch.Tensor, first: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Self-refined retrieval: (the set each image ends on, the head's logits on that set's features), starting
        from the task of the class the prototype logits `first` predict."""
        chosen = self.class_tasks[first.argmax(1)]
        rows = torch.arange(every.shape[1], device=every.device)
        for step in range(self.config.refine_steps):
            logits = self.head(every[chosen, rows])
            if step < self.config.refine_steps - 1:  # the last look-up's proposal is not followed
                chosen = self.class_tasks[logits.argmax(1)]
        return chosen, logits

    def scored(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, chosen set) of a batch."""
        every = self.every_set(x)
        first = self.prototypes(every[0])
        if not len(self.class_tasks):  # nothing learnt yet
            return first, first.new_zeros(len(x), dtype=torch.long)
        chosen, refined = self.retrieve(every, first)
        if not self.config.ensemble:
            return refined, chosen
        return F.softmax(refined.float(), dim=1) + F.softmax(len(self.bank) * first, dim=1), chosen

    def predict(self, x: torch.Tensor, task_id: Optional[int] = None) -> torch.Tensor:
        return self.scored(x)[0]

    def selected_task(self, x: torch.Tensor) -> torch.Tensor:
        return self.scored(x)[1]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Set 0's network (the task predictor; the pre-trained one before the first task)."""
        return self.bank.features(self.backbone, x, 0 if len(self.bank) else None)

    def prepare_to_load(self, state: Mapping[str, torch.Tensor]) -> None:
        """Rebuild the stored tasks' sets, so that their tensors can load."""
        self.bank.grow_to(stored_sets(state, "bank"))

    def report(self) -> dict[str, Any]:
        return {"protocol": f"self-refined retrieval, {self.config.refine_steps} look-ups"
                            + (", ensembled with the prototype logits" if self.config.ensemble else "")}
