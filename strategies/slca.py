"""SLCA: Slow Learner with Classifier Alignment (Zhang, Wang, Kang, Chen, Wei; ICCV 2023; arXiv 2303.05118), after
the official code (GengDavid/SLCA@169d4e6: models/slca.py, models/base.py, convs/linears.py, convs/vits.py).

Each task, in `train_task`:
1. Slow learner. The whole network trains with SGD (momentum 0.9, weight decay 5e-4) in two parameter groups: the
   heads at `lr` (0.01), the backbone at `lr * backbone_lr_scale` (1/100, i.e. 1e-4); the lr is multiplied by 0.1
   after each epoch listed in `milestones`. One linear head per task (trunc-normal 0.02, bias 0), the earlier heads
   frozen, logits concatenated; the loss is cross-entropy over the current task's logits only. Before the first
   task the final LayerNorm is reset to weight 1, bias 0 (`fresh_norm`; the reference builds its ViT with
   `del model.norm; model.norm = nn.LayerNorm(768)`) and then trains with the backbone.
2. Class statistics. For each class of the task: mean and covariance (+1e-4 I) of the features of its training
   images, network in eval mode. Stored, never recomputed: old classes keep the statistics of the backbone of their
   own task.
3. Classifier alignment, from the second task on. The slow learner's heads are copied; then all heads (earlier ones
   included) train for `ca_epochs` (5) on `ca_samples` (256) features per class drawn afresh every epoch from the
   stored Gaussians, the mean of a class of task t_c shrunk by 0.9 + 0.1 (t_c + 1) / (t + 1) at task t; SGD at `lr`
   with a cosine schedule over the epochs; loss = cross-entropy of logits / mean over heads of each head's logit
   L2 norm / `ca_temperature` (0.1). The backbone does not run.

The runner evaluates the task with the aligned heads. The next `train_task` first puts the copied slow-learner heads
back (the reference's `after_task` -> `fc.recall()`; nothing runs in between but evaluation and the checkpoint), so
alignment never accumulates and each slow-learner stage continues from the slow learner's own heads. Everything a
later task needs (heads, the copy of the slow-learner heads, the statistics with their classes and tasks) is held in
parameters and buffers, so a checkpoint restores it and a resumed run behaves as an uninterrupted one. The statistics
(C x d x d numbers for C classes) count in `params_added`.

Presets (`preset:`, filling `epochs`, `milestones`, `batch_size` where not set): `mini` (default, CPU-sized for
the mini benchmark), `reference` (ViT-B/16 on CIFAR-100, exps/slca/slca_cifar.json: 20 epochs, milestone 18,
batch 128) and `reference-imagenet-r` (ImageNet-R, CUB, Cars: 50 epochs, milestone 40, batch 128). The MoCo-v3
backbone's runs use 90 epochs, milestone 80 (set them explicitly); Cars uses `ca_temperature: 0.05`.

Deviations from the reference:
- The final norm is reset in place when the first task starts rather than replaced when the network is built: the
  "before training" retention score and the runner's contract see the pre-trained network, and `pretrain_drop`
  includes the reset. The norm keeps the backbone's epsilon (timm: 1e-6; the reference's fresh norm: 1e-5).
- Inputs carry the backbone's own normalisation (the stream's preprocessing), not CIFAR's mean and std.
- Means and covariances are computed in float64 (as the reference) and stored in float32 (the reference stores
  covariances in a float32 tensor too and samples in float32).
- All classes are sampled at once from one batched Gaussian (the same distribution; other random draws than the
  reference's per-class loop). A class's task t_c is the task its statistics came from (the reference's
  `c_id // task_size`, equal for equal task sizes).
- Domain-incremental streams (not in the paper): every task stores a Gaussian for each of its classes as seen in that
  task, so each class gets one per domain; a task bringing no new class adds no head (the one head trains on).
- `covariance: diagonal` (d numbers per class instead of d x d, for many classes) is an option, not the reference.
- No per-epoch test-set evaluation (the reference only logs it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from benchmark.config import apply_preset, require
from benchmark.recipe import RecipeConfig
from benchmark.errors import ConfigError
from benchmark.streams import Task
from strategies._gaussians import COVARIANCES, ClassGaussians
from strategies._heads import TaskHeads
from strategies._loop import check_finite, run_epoch, shuffled_batches, task_cross_entropy, training_data
from strategies.base import Strategy, register

PRESETS = {
    "mini": dict(epochs=3, milestones=(2,), batch_size=32),
    "reference": dict(epochs=20, milestones=(18,), batch_size=128),
    "reference-imagenet-r": dict(epochs=50, milestones=(40,), batch_size=128),
}


@dataclass(frozen=True)
class SLCAConfig(RecipeConfig):
    preset: str = "mini"  # fills the fields left null: mini, reference (CIFAR-100), reference-imagenet-r
    epochs: Optional[int] = None  # slow-learner epochs per task
    milestones: Optional[tuple[int, ...]] = None  # epochs after which the lr is multiplied by lr_decay
    batch_size: Optional[int] = None
    lr: float = 0.01  # the heads' lr in the slow learner, and the lr of classifier alignment
    backbone_lr_scale: float = 0.01  # backbone lr = lr * this (the reference's bcb_lrscale)
    momentum: float = 0.9
    weight_decay: float = 5e-4  # both parameter groups, and alignment
    lr_decay: float = 0.1  # MultiStepLR's gamma
    fresh_norm: bool = True  # reset the final LayerNorm to weight 1, bias 0 before the first task (the reference)
    covariance: str = "full"  # full (the reference) or diagonal
    ca_epochs: int = 5  # classifier-alignment epochs per task; 0 turns alignment off
    ca_samples: int = 256  # features drawn per class each alignment epoch; also the alignment batch size
    ca_temperature: Optional[float] = 0.1  # tau dividing the normalised logits; null = plain cross-entropy

    def __post_init__(self) -> None:
        apply_preset(self, PRESETS)
        self.resolve_recipe()
        require(self.epochs >= 1, "epochs", ">= 1", self.epochs)
        require(all(m >= 1 for m in self.milestones), "milestones", "epochs >= 1", list(self.milestones))
        require(self.batch_size >= 1, "batch_size", ">= 1", self.batch_size)
        require(self.lr > 0, "lr", "> 0", self.lr)
        require(0 < self.backbone_lr_scale <= 1, "backbone_lr_scale", "in (0, 1]", self.backbone_lr_scale)
        require(0 <= self.momentum < 1, "momentum", "in [0, 1)", self.momentum)
        require(self.weight_decay >= 0, "weight_decay", ">= 0", self.weight_decay)
        require(0 < self.lr_decay <= 1, "lr_decay", "in (0, 1]", self.lr_decay)
        require(self.covariance in COVARIANCES, "covariance", f"one of {', '.join(COVARIANCES)}", self.covariance)
        require(self.ca_epochs >= 0, "ca_epochs", ">= 0", self.ca_epochs)
        require(self.ca_samples >= 2, "ca_samples", ">= 2", self.ca_samples)
        require(self.ca_temperature is None or self.ca_temperature > 0, "ca_temperature", "> 0 or null",
                self.ca_temperature)


@register("slca")
class SLCA(Strategy):
    Config = SLCAConfig

    def __init__(self, backbone: nn.Module, config: SLCAConfig, runtime) -> None:
        super().__init__(backbone, config, runtime)
        if config.fresh_norm and not isinstance(getattr(self.backbone, "norm", None), nn.LayerNorm):
            raise ConfigError("strategies.slca.fresh_norm: the backbone has no final LayerNorm `norm` to reset; "
                              "set fresh_norm: false")
        dim, device = self.feature_dim, runtime.device
        self.heads = TaskHeads(dim, "trunc_normal").to(device)
        # the slow learner's heads, kept while the aligned ones are evaluated
        self.register_buffer("slow_weight", torch.zeros(0, dim, device=device))
        self.register_buffer("slow_bias", torch.zeros(0, device=device))
        self.statistics = ClassGaussians(dim, config.covariance).to(device)  # one Gaussian per class and task

    def training_bytes(self) -> int:
        """The features drawn for one class in an alignment epoch (`ca_samples` x d, float32): a floor, since every
        class seen is drawn."""
        return 4 * self.config.ca_samples * self.feature_dim if self.config.ca_epochs else 0

    def train_task(self, task: Task) -> None:
        self.heads.load_rows(self.slow_weight, self.slow_bias)  # undo the previous task's alignment
        if task.index == 0 and self.config.fresh_norm:
            reset_layer_norm(self.backbone.norm)
        self.heads.add(task.num_outputs)
        self.train_slow_learner(task)
        self.slow_weight, self.slow_bias = self.heads.rows()
        self.add_class_statistics(task)
        if task.index > 0 and self.config.ca_epochs > 0:
            self.align_classifier(task.index)

    def predict(self, x: torch.Tensor, task_id: Optional[int] = None) -> torch.Tensor:
        return self.heads(self.features(x))

    # 1. slow learner

    def slow_learner_groups(self) -> list[dict]:
        """SGD parameter groups: the backbone at lr * backbone_lr_scale, the trainable (newest) head at lr."""
        heads = [p for p in self.heads.parameters() if p.requires_grad]
        return [{"params": list(self.backbone.parameters()), "lr": self.config.lr * self.config.backbone_lr_scale},
                {"params": heads, "lr": self.config.lr}]

    def train_slow_learner(self, task: Task) -> None:
        config = self.config
        optimizer = torch.optim.SGD(self.slow_learner_groups(), lr=config.lr, momentum=config.momentum,
                                    weight_decay=config.weight_decay)
        schedule = torch.optim.lr_scheduler.MultiStepLR(optimizer, list(config.milestones), gamma=config.lr_decay)
        batches = shuffled_batches(training_data(task, self.runtime), config.batch_size, self.runtime)
        loss = lambda x, y: task_cross_entropy(self.predict(x), y, task, "local")  # noqa: E731
        self.train()
        for epoch in self.runtime.bar(range(config.epochs), desc=f"SLCA slow learner {task.name}"):
            check_finite(run_epoch(loss, batches, optimizer, self.runtime), epoch, epoch * len(batches))
            schedule.step()

    # 2. class statistics

    @torch.no_grad()
    def add_class_statistics(self, task: Task) -> None:
        """Append a Gaussian for each class of `task`, from its training images' features (eval mode, float64)."""
        self.eval()
        features, labels = self.training_features(task)
        self.statistics.add(features, labels, task.labels, task.index)

    def training_features(self, task: Task) -> tuple[torch.Tensor, torch.Tensor]:
        """Features (float64, computed in float32 without autocast) and labels of every training image of `task`,
        under the test transform as the reference computes them (`Task.train_unaugmented`)."""
        features, labels = [], []
        data = task.train_unaugmented
        loader = DataLoader(data, batch_size=self.runtime.eval_batch, shuffle=False,
                            **self.runtime.loader_options(data, persistent=False))
        for images, batch_labels in loader:
            features.append(self.features(images.to(self.runtime.device)).double())
            labels.append(batch_labels.to(self.runtime.device))
        return torch.cat(features), torch.cat(labels)

    # 3. classifier alignment

    def normalised_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """logits / (mean over heads of each head's logit L2 norm) / tau: no head wins by the scale of its logits."""
        if self.config.ca_temperature is None:
            return logits
        norms = torch.stack([block.norm(dim=1) + 1e-7 for block in self.heads.split(logits)], dim=1)
        return logits / norms.mean(dim=1, keepdim=True) / self.config.ca_temperature

    def align_classifier(self, task_index: int) -> None:
        config = self.config
        self.eval()
        self.heads.requires_grad_(True)  # every head aligns, the earlier ones included
        loss = lambda f, y: F.cross_entropy(self.normalised_logits(self.heads(f)), y)  # noqa: E731
        self.statistics.align(loss, self.heads.parameters(), config.ca_samples, config.ca_epochs, config.ca_epochs,
                              config.lr, config.momentum, config.weight_decay, self.runtime,
                              f"SLCA alignment task {task_index}", shrink=self.statistics.growing_shrink(task_index))
        self.heads.freeze_earlier_heads()


@torch.no_grad()
def reset_layer_norm(norm: nn.LayerNorm) -> None:
    """Weight 1, bias 0: what a freshly built LayerNorm holds."""
    nn.init.ones_(norm.weight)
    nn.init.zeros_(norm.bias)
