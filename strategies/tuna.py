"""TUNA: Integrating Task-Specific and Universal Adapters for Pre-Trained Model-based Class-Incremental Learning
(Wang, Zhou, Ye; ICCV 2025; arXiv 2508.08165), after the official code as released (commit 77d4f10 of its history,
kept in the fork Ngahoang2005/ICCV2025-TUNA@62754c5, whose later commits are a third party's: `models/tuna.py`,
`backbone/vit_tuna.py`, `utils/inc_net.py` `TUNANet`, `backbone/linears.py` `SimpleContinualLinear`,
`exps/tuna_*.json`).

Each task t, in `train_task`:
1. Task-specific adapter set t (one AdaptFormer adapter per block, bottleneck r = 16, ReLU, dropout 0.1, scale 0.1;
   `strategies._adapter_bank`) starts from set t - 1's weights (the reference trains one `cur_adapter` on and keeps
   a copy per task) and trains with the cosine classifier (no bias, rows trunc-normal 0.02, all rows trainable):
   CosFace with margin 0, i.e. cross-entropy of `scale` (20) x cosines over the task's classes (models/tuna.py:20-56,
   178-216); SGD momentum 0.9 on adapters and classifier at lr, weight decay; optionally (`orthogonal`, the
   ImageNet-R config) plus orthogonal x exp(-(t + 1)) x the mean over blocks of |mean(U_t U_i^T)| summed over earlier
   sets i, U the row-normalised up-projection weights (:217-233). Set t is frozen when the next task adds its set.
2. Universal adapter (from task 1 on): the EMR merge of sets 0..t (`strategies._adapter_bank.emr_merge`: per entry
   the sign of the mean, the largest magnitude agreeing with it; backbone/vit_tuna.py:82-115, 382-397).
3. Class statistics of set t's features (mean and covariance + 1e-4 I) and, from task 1 on, classifier alignment:
   all rows train on `ca_samples` (5 x batch) features drawn per class from every stored Gaussian, 30 epochs, SGD lr
   0.005, momentum 0.9, `CosineAnnealingLR(T_max=5)` stepped per epoch (so the lr rises again every 5 epochs), loss
   the cross-entropy of scale x cosines (`strategies._gaussians`; models/tuna.py:234-354).
Inference (models/tuna.py:376-424): every task-specific set's scaled cosine logits; each image takes the set whose
softmax has the lowest entropy (`lowest_entropy`); the logits are softmax(universal set's logits) + softmax(that
set's logits). After the first task: set 0's logits alone. Cost: t + 1 task-specific passes and the universal one.
`selected_task` is the lowest-entropy set.

`features` (what retention protocols score with the pre-training head) are the universal adapter's network's (set
0's after the first task).

Presets (`preset:`): `reference` (CIFAR-100 B0-Inc5, exps/tuna_cifar.json: 15 epochs, batch 16, lr 0.01, wd 5e-4, 80
samples per class, no orthogonality term), `reference-imagenet-r` (ImageNet-R B0-Inc20, exps/tuna_imgr.json: 10
epochs, batch 32, lr 0.02, wd 5e-4, 160 samples, orthogonality 1e-3, shrunk means) and `mini` (default, CPU-sized: 2
epochs, batch 16, lr 0.02, wd 5e-4, 5 alignment epochs of 80 samples). The `reference*` presets run the reference's
recipe (benchmark/recipe.py): fp32; [0, 1] pixels, RandomResizedCrop scale (0.05, 1), test Resize(256, bicubic) +
CenterCrop(224) (`input: unnormalised`, utils/data.py:95-119, 121-147); the lr cosine stepped per epoch to 0
(`schedule: cosine-epochs`, models/tuna.py:166-176).

Deviations from the reference:
- `universal: merged` (default) evaluates with the EMR-merged set, as the paper describes. The released code asks
  for adapter `t + 1`, which its ViT resolves to `cur_adapter` (`adapter_id == len(adapter_list)`,
  backbone/vit_tuna.py:418-419), the task-t set, so the merged set is built but never read; `universal: latest`
  reproduces that.
- `ca_shrink: true` (the ImageNet-R config's `decay`) multiplies a class's mean by 0.9 + 0.1 (t_c + 1) / (t + 1), SLCA's
  factor, which the reference's code intends; its `task_size` is negative (`_known_classes - _total_classes`,
  models/tuna.py:281-296), so its factor is about 0.9 for every class instead.
- Earlier sets stay frozen. The reference's optimiser also holds the stored copies (their names contain "adapter"),
  so on ImageNet-R the orthogonality term moves their up-projections a little, and weight decay shrinks those.
- Adapters attach by forward hooks to timm's ViT; all Gaussians are sampled at once; statistics in float64.
- The mini preset anneals the lr per step and keeps the suite's input pipeline and precision.
- Domain-incremental streams (not in the paper): every task stores a Gaussian per class.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Optional

import torch
import torch.nn.functional as F
from torch import nn

from benchmark.config import apply_preset, require
from benchmark.streams import Task
from strategies._adapter_bank import AdapterBank, emr_merge, merged_state, stored_sets
from strategies._first_session import PILOT_RECIPE, FirstSessionConfig
from strategies._gaussians import COVARIANCES, ClassGaussians
from strategies._heads import GrowingClassifier
from strategies._loop import fit, local_units, training_data
from strategies._prototypes import cosine_logits
from strategies._tuned import set_train_modes
from strategies.base import Strategy, register

PRESETS = {
    "mini": dict(epochs=2, batch_size=16, lr=0.02, weight_decay=5e-4, orthogonal=0.0, ca_epochs=5, ca_samples=80,
                 ca_shrink=False),
    "reference": dict(epochs=15, batch_size=16, lr=0.01, weight_decay=5e-4, orthogonal=0.0, ca_epochs=30,
                      ca_samples=80, ca_shrink=False, **PILOT_RECIPE),
    "reference-imagenet-r": dict(epochs=10, batch_size=32, lr=0.02, weight_decay=5e-4, orthogonal=1e-3, ca_epochs=30,
                                 ca_samples=160, ca_shrink=True, **PILOT_RECIPE),
}
UNIVERSAL = ("merged", "latest")
ENTROPY_EPSILON = 1e-10  # inside the log, as the reference's


def lowest_entropy(logits: torch.Tensor) -> torch.Tensor:
    """(n,): for each image the index of the set whose softmax over `logits` (sets, n, classes) has the lowest
    entropy -sum p log(p + 1e-10) (the first such set on ties, as argmin)."""
    probabilities = F.softmax(logits.float(), dim=-1)
    entropy = -(probabilities * torch.log(probabilities + ENTROPY_EPSILON)).sum(-1)
    return entropy.argmin(0)


@dataclass(frozen=True)
class TUNAConfig(FirstSessionConfig):
    preset: str = "mini"  # fills the fields left null: mini, reference (CIFAR-100), reference-imagenet-r
    bottleneck: int = 16  # adapter width (r)
    scale: float = 20.0  # s multiplying the cosines (CosFace, margin 0), in training, alignment and inference
    orthogonal: Optional[float] = None  # weight of the up-projections' orthogonality term (reg; 0: off, use_orth)
    universal: str = "merged"  # merged (the paper's universal adapter) or latest (the released code's evaluation)
    ca_epochs: Optional[int] = None  # classifier-alignment epochs per task (crct_epochs); 0: none
    ca_lr: float = 0.005
    ca_samples: Optional[int] = None  # features drawn per class and epoch, also the batch (5 x batch_size)
    ca_period: int = 5  # T_max of the alignment's per-epoch cosine (the reference: 5, over 30 epochs)
    ca_shrink: Optional[bool] = None  # shrink old classes' means as SLCA (the reference's `decay`)
    covariance: str = "full"  # full (the reference) or diagonal

    def __post_init__(self) -> None:
        apply_preset(self, PRESETS)
        self.check_first_session(min_epochs=1, uses_petl=False)
        require(self.scale > 0, "scale", "> 0", self.scale)
        require(self.orthogonal >= 0, "orthogonal", ">= 0", self.orthogonal)
        require(self.universal in UNIVERSAL, "universal", f"one of {', '.join(UNIVERSAL)}", self.universal)
        require(self.ca_epochs >= 0, "ca_epochs", ">= 0", self.ca_epochs)
        require(self.ca_lr > 0, "ca_lr", "> 0", self.ca_lr)
        require(self.ca_samples >= 2, "ca_samples", ">= 2", self.ca_samples)
        require(self.ca_period >= 1, "ca_period", ">= 1", self.ca_period)
        require(self.covariance in COVARIANCES, "covariance", f"one of {', '.join(COVARIANCES)}", self.covariance)


@register("tuna")
class TUNA(Strategy):
    Config = TUNAConfig
    feature_free = ("head", "statistics")
    selects_task = True

    def __init__(self, backbone: nn.Module, config: TUNAConfig, runtime) -> None:
        super().__init__(backbone, config, runtime)
        self.backbone.requires_grad_(False)
        dim, device = self.feature_dim, runtime.device
        shape = (config.bottleneck, config.adapter_scale, config.adapter_dropout)
        self.bank = AdapterBank(self.backbone, *shape)  # the task-specific sets
        self.universal = AdapterBank(self.backbone, *shape)  # one set: the merge of the task-specific ones
        self.head = GrowingClassifier(dim, "trunc_normal", bias=False).to(device)
        self.statistics = ClassGaussians(dim, config.covariance).to(device)

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        """scale x cos(features, each class's row)."""
        return self.config.scale * cosine_logits(features, self.head.weight)

    def train_task(self, task: Task) -> None:
        index = self.bank.add_continuing()
        self.head.grow(task.num_outputs)
        self.train_adapters(task, index)
        self.eval()
        self.statistics.add(*self.bank.task_features(self.backbone, task, index, self.runtime), task.labels, index)
        if index > 0:
            self.merge_universal()
            if self.config.ca_epochs:
                self.align_head(index)

    def merge_universal(self) -> None:
        """The universal set <- the EMR merge of every task-specific set (added, frozen, at the second task)."""
        if not len(self.universal):
            self.universal.add()
            self.universal.freeze(0)
        self.universal.sets[0].load_state_dict(merged_state(self.bank.sets, emr_merge))

    def train_adapters(self, task: Task, index: int) -> None:
        """Set `index` and the classifier on the scaled cosines' cross-entropy over the task's classes, plus the
        orthogonality term where it is on."""
        config = self.config
        units, position = local_units(task.labels, task.num_outputs, self.runtime.device)

        def loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            ce = F.cross_entropy(self.logits(self.backbone(x))[:, units], position[y])
            if not (config.orthogonal and index):
                return ce
            return ce + config.orthogonal * math.exp(-(index + 1)) * self.up_projection_overlap(index)

        parameters = [*self.bank.sets[index].parameters(), *self.head.parameters()]
        with self.bank.selected(index):
            set_train_modes(self)
            fit(loss, parameters, training_data(task, self.runtime), config.train_config(), self.runtime,
                desc=f"TUNA {task.name}")

    def up_projection_overlap(self, index: int) -> torch.Tensor:
        """Sum over earlier sets i of the mean over blocks of |mean(U_index U_i^T)|, U the up-projection weights
        (d x r) with each row L2-normalised."""
        current = [F.normalize(adapter.up.weight, dim=1) for adapter in self.bank.sets[index]]
        total = current[0].new_zeros(())
        for earlier in self.bank.sets[:index]:
            for mine, theirs in zip(current, earlier):
                total = total + (mine @ F.normalize(theirs.up.weight, dim=1).T).mean().abs() / len(current)
        return total

    def align_head(self, index: int) -> None:
        config = self.config
        loss = lambda f, y: F.cross_entropy(self.logits(f), y)  # noqa: E731
        self.statistics.align(loss, self.head.parameters(), config.ca_samples, config.ca_epochs, config.ca_period,
                              config.ca_lr, config.momentum, config.weight_decay, self.runtime,
                              f"TUNA alignment task {index}",
                              shrink=self.statistics.growing_shrink(index) if config.ca_shrink else None)

    def universal_features(self, x: torch.Tensor) -> torch.Tensor:
        """The universal adapter's features: the merged set, or with `universal: latest` the newest task set."""
        if self.config.universal == "latest" or not len(self.universal):
            return self.bank.shared_features(self.backbone, x, len(self.bank) - 1 if len(self.bank) else None,
                                             self.runtime)
        return self.universal.shared_features(self.backbone, x, 0, self.runtime)

    def every_pass(self, x: torch.Tensor) -> torch.Tensor:
        """(passes, n, d): each task-specific set's features, then (from the second task on) the universal
        adapter's."""
        specific = self.bank.every_set(self.backbone, x, self.runtime)
        if len(self.bank) <= 1:
            return specific
        return torch.cat([specific, self.universal_features(x)[None]])

    def scored(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, selected set) of a batch, the passes shared with equal ones on the same batch."""
        every = self.every_pass(x)
        with torch.autocast(every.device.type, enabled=False):
            if len(self.bank) <= 1:  # the first task: set 0 alone (before it, the pre-trained network)
                return self.logits(every[0].float()), x.new_zeros(len(x), dtype=torch.long)
            specific = torch.stack([self.logits(features.float()) for features in every[:-1]])
            chosen = lowest_entropy(specific)
            selected = specific[chosen, torch.arange(len(x), device=x.device)]
            return F.softmax(self.logits(every[-1].float()), dim=1) + F.softmax(selected, dim=1), chosen

    def predict(self, x: torch.Tensor, task_id: Optional[int] = None) -> torch.Tensor:
        return self.scored(x)[0]

    def selected_task(self, x: torch.Tensor) -> torch.Tensor:
        return self.scored(x)[1]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.universal_features(x)

    def prepare_to_load(self, state: Mapping[str, torch.Tensor]) -> None:
        """Rebuild the stored tasks' sets and the universal one (never trained), so that their tensors can load."""
        self.bank.grow_to(stored_sets(state, "bank"))
        self.universal.grow_to(stored_sets(state, "universal"))
        if len(self.universal):
            self.universal.freeze(0)

    def report(self) -> dict[str, Any]:
        return {"protocol": f"lowest-entropy task adapter + universal adapter ({self.config.universal})"}
