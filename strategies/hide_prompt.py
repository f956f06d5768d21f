"""HiDe-Prompt: Hierarchical Decomposition of Prompt-Based Continual Learning (Wang, Xie, Zhang, Huang, Su, Zhu;
NeurIPS 2023; arXiv 2310.07234), after the official code thu-ml/HiDe-Prompt@0ed4333 (engines/hide_tii_engine.py,
engines/hide_promtp_wtp_and_tap_engine.py, vits/hide_prompt_vision_transformer.py, peft/prompt/hide_prompt.py,
configs/{cifar100,imr}_hideprompt_5e.py, training_scripts/train_{cifar100,imr}_vit.sh).

The whole ViT is frozen. The continual-learning objective is split into three parts, each trained explicitly:
- task-identity inference (TII) from uninstructed representations: the prompt-free pre-logit [CLS] of the frozen
  backbone (`PromptedViT.query`) goes through a residual MLP (d -> 2d, GELU, -> d, + input, LayerNorm; the
  reference's `MlpMapping`, hidden [2]) and a linear head with one unit per class of every task. It trains on each
  task for `tii_epochs` (cross-entropy over the task's units, Adam); a test image's task is the task of its
  highest-scoring unit (engines/hide_promtp_wtp_and_tap_engine.py:118-131);
- within-task prediction (WTP): one prefix prompt per task, `e_length` key and as many value tokens in each of
  `e_blocks` (0-4), U(-1, 1) for the first task, a copy of the previous task's after that (`shared_prompt_pool`). Task
  t trains its prompt mixed with the mean of the earlier ones, (1 - m) P_t + m mean(P_<t) (m = `prompt_momentum`
  0.01, the earlier prompts held fixed), and stores that mixture afterwards (:315-324). The loss is cross-entropy over
  the task's classes of the linear head on the prompted [CLS] plus `contrast` x the contrastive term of `orth_loss`
  (:528-546): with M the rows of every earlier class's cluster means followed by the batch's features,
  cross-entropy(M M^T / 0.8, identity), pushing features away from old classes' statistics. Adam at a constant or
  scheduled lr trains the prompt at `lr` and the head at `lr * head_lr_scale` (`--larger_prompt_lr`);
- task-adaptive prediction (TAP) with feature-statistics replay: after each task, the features of every class of
  the task are summarised by k-means clusters (mean and variance each, `strategies/_centroids.py`), on the
  uninstructed features for the TII and on the instructed ones (the task's own prompt) for the head; from the second
  task on, the TII (MLP and head) and the prompted head are each aligned on samples drawn from every stored cluster
  (SGD, cosine over `ca_epochs`; engines/hide_tii_engine.py:280-387 and :418-525).
At test time each image takes the prompt of the task the TII infers; the head reads the prompted [CLS]
(`classify`), so the logits come from the same features as retention.

Task identification (`diagnostics' `task_selection_acc``): the inferred task against the image's own; the
reference's `Acc@task`.

Presets (`preset:`, filling the fields left null): `reference` (CIFAR-100, training_scripts/train_cifar100_vit.sh
and configs/cifar100_hideprompt_5e.py: TII 20 epochs at lr 0.0005 x 24 / 256, constant; prompts of 5 tokens, 50
epochs, lr 0.03 x 24 / 256 for the prompt and a tenth of it for the head, timm's step schedule (x0.1 every 30
epochs), contrast 0.1; alignment 30 epochs at lr 0.005 (TII: 0.005 x 24 / 256, the TII trainer scales it by the
batch, the prompt trainer does not), 24 (TII) and 120 samples per cluster, 10 clusters per class; batch 24, gradient
clipping at global norm 1.0, fp32), `reference-imagenet-r` (train_imr_vit.sh: prompts of 20 tokens, 150 epochs,
timm's cosine to 1e-5, contrast 0.5), and `mini` (default: CPU-sized for the mini streams). Input pipelines: CIFAR-100
normalised by its own mean/std, bicubic (`input: cifar-normalised-bicubic`, datasets.py:339-363); ImageNet-R [0, 1]
pixels, crop scale (0.05, 1), test Resize(256, bicubic) + CenterCrop(224) (`input: unnormalised`,
datasets.py:289-310). The reference's class order is the data set's own (`--shuffle` false: the stream's `shuffle:
false`), its seeds 42, 40, 44, its backbone `vit_base_patch16_224` with ViT-B_16.npz (timm
`vit_base_patch16_224.orig_in21k`).

Deviations from the reference:
- The prefix is laid out as the paper describes it (a prompt's key tokens to the keys, its value tokens to the
  values); the reference reshapes the selected prompts without a permute (peft/prompt/hide_prompt.py:115-119, as
  dualprompt-pytorch issue 8), so in a batch sharing one prompt the first half gets its key half as keys and values
  and the second half its value half, and with per-image prompts image b gets those of images 2b and 2b + 1.
- One process: the reference's scripts launch 8 (`torch.distributed.launch --nproc_per_node=8`, batch 24 per
  process, lr scaled by 24 / 256 only: `unscale_lr`), so each of its WTP and TII steps averages the gradients of
  8 x 24 = 192 images (and computes the contrastive term per 24); here a step sees 24 images, 8 times as many steps
  per epoch. Its alignment draws alike on every process (each seeds torch with the same `--seed`, main.py:103-107), so
  its steps are one process's.
- The two stages run task by task in one run (the reference trains the TII for every task first, then the prompts,
  loading the TII checkpoint of each task): the same computation, other random draws.
- Per-task prompts are added task by task (no pool of 10: any number of tasks); the head has units for the classes
  seen so far (the reference's 100 units, unseen ones never trained, are not masked at test time).
- Class statistics: this suite's k-means (seeded, `strategies/_centroids.py`), not sklearn's unseeded `KMeans`;
  only the `multi-centroid` storage (the reference's default; `covariance` and `variance` are not offered).
- CIFAR-100's brightness jitter (ColorJitter 63/255) is not applied; the backbone's crop draws come from timm.
- Domain-incremental streams (not in the paper): the TII has one unit per (task, class) pair and infers the task of
  the best one, so it tells domains apart; statistics are kept per task and class.
- The `mini` preset keeps the suite's input pipeline and precision.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn

from benchmark.config import require
from benchmark.streams import Task
from strategies._centroids import ClassCentroids, align
from strategies._heads import GrowingClassifier
from strategies._loop import fit, frozen_prefix_data, local_units, task_cross_entropy, training_data
from strategies._prompts import Prefix, PromptConfig, PromptedViT, existing_blocks, protocol, uniform
from strategies._prototypes import task_features
from strategies.base import Strategy, register

BATCH = 24  # both reference scripts; the reference scales lr by batch / 256 ("unscale_lr")
RECIPE = dict(batch_size=BATCH, lr=0.03 * BATCH / 256, grad_clip=1.0, precision="fp32", tii_epochs=20,
              tii_lr=0.0005 * BATCH / 256, ca_epochs=30, ca_lr=0.005, tii_ca_lr=0.005 * BATCH / 256,
              ca_samples=5 * BATCH, tii_ca_samples=BATCH, centroids=10)
PRESETS = {
    "mini": dict(epochs=2, batch_size=32, lr=0.01, schedule="constant", e_length=4, contrast=0.1, tii_epochs=5,
                 tii_lr=1e-3, ca_epochs=5, ca_lr=0.01, tii_ca_lr=0.01, ca_samples=32, tii_ca_samples=32, centroids=3),
    "reference": dict(epochs=50, schedule="hide-step", e_length=5, contrast=0.1, input="cifar-normalised-bicubic",
                      **RECIPE),
    "reference-imagenet-r": dict(epochs=150, schedule="hide-cosine", e_length=20, contrast=0.5, input="unnormalised",
                                 **RECIPE),
}
CONTRAST_TEMPERATURE = 0.8  # orth_loss's fixed divisor


@dataclass(frozen=True)
class HiDePromptConfig(PromptConfig):
    PRESETS = PRESETS

    e_blocks: tuple[int, ...] = (0, 1, 2, 3, 4)  # blocks with the task prompt's prefix; past the depth: dropped
    e_length: Optional[int] = None  # key tokens (and as many value tokens) per block: 5 (CIFAR-100), 20 (ImageNet-R)
    prompt_momentum: float = 0.01  # m in (1 - m) P_t + m mean(P_<t)
    head_lr_scale: float = 0.1  # the head's lr = lr x this (--larger_prompt_lr)
    contrast: Optional[float] = None  # weight of the contrastive term (`reg`): 0.1 (CIFAR-100), 0.5 (ImageNet-R)
    tii_hidden: int = 2  # width of the TII's MLP, in multiples of the feature dimension (mlp_structure [2])
    tii_epochs: Optional[int] = None  # TII epochs per task (batch_size, grad_clip as the prompts; constant lr)
    tii_lr: Optional[float] = None
    ca_epochs: Optional[int] = None  # alignment epochs per task from the second on (crct_epochs); 0: no alignment
    ca_lr: Optional[float] = None  # the prompted head's alignment lr
    tii_ca_lr: Optional[float] = None  # the TII's alignment lr
    ca_samples: Optional[int] = None  # samples per cluster and per batch, head alignment (5 x batch)
    tii_ca_samples: Optional[int] = None  # the same, TII alignment (batch)
    centroids: Optional[int] = None  # k-means clusters per class (n_centroids)

    def __post_init__(self) -> None:
        super().__post_init__()
        require(len(self.e_blocks) >= 1 and min(self.e_blocks) >= 0 and len(set(self.e_blocks)) == len(self.e_blocks),
                "e_blocks", "distinct block indices >= 0", list(self.e_blocks))
        for key in ("e_length", "tii_hidden", "tii_epochs", "ca_samples", "tii_ca_samples", "centroids"):
            require(getattr(self, key) >= 1, key, ">= 1", getattr(self, key))
        for key in ("head_lr_scale", "tii_lr", "ca_lr", "tii_ca_lr"):
            require(getattr(self, key) > 0, key, "> 0", getattr(self, key))
        require(0 <= self.prompt_momentum < 1, "prompt_momentum", "in [0, 1)", self.prompt_momentum)
        require(self.contrast >= 0, "contrast", ">= 0", self.contrast)
        require(self.ca_epochs >= 0, "ca_epochs", ">= 0", self.ca_epochs)


class TaskIdentityClassifier(nn.Module):
    """The TII on uninstructed features: head(LayerNorm(x + fc2(GELU(fc1(x))))), one head unit per (task, class);
    linear layers as timm initialises them (trunc-normal 0.02, bias 0), the LayerNorm's epsilon 1e-5."""

    def __init__(self, dim: int, hidden: int, head_init: str) -> None:
        super().__init__()
        self.fc1, self.fc2, self.norm = nn.Linear(dim, hidden * dim), nn.Linear(hidden * dim, dim), nn.LayerNorm(dim)
        for layer in (self.fc1, self.fc2):
            nn.init.trunc_normal_(layer.weight, std=0.02)
            nn.init.zeros_(layer.bias)
        self.head = GrowingClassifier(dim, head_init)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(features + self.fc2(F.gelu(self.fc1(features)))))


def contrastive(features: torch.Tensor, anchors: torch.Tensor,
                temperature: float = CONTRAST_TEMPERATURE) -> torch.Tensor:
    """`orth_loss` without its weight: M = [anchors; features], cross-entropy(M M^T / temperature, identity), each
    row's own column the target; in float32 outside autocast (squared norms of hundreds would round in bf16)."""
    with torch.autocast(features.device.type, enabled=False):
        rows = torch.cat([anchors.to(features.device, torch.float32), features.float()])
        return F.cross_entropy(rows @ rows.T / temperature, torch.arange(len(rows), device=rows.device))


@register("hide_prompt")
class HiDePrompt(Strategy):
    Config = HiDePromptConfig
    shares_with = "prompt query"  # the frozen backbone's prompt-free query (PromptedViT.query)
    selects_task = True
    classifies_features = True
    feature_free = ("head", "uninstructed", "instructed")

    def __init__(self, backbone: nn.Module, config: HiDePromptConfig, runtime) -> None:
        super().__init__(backbone, config, runtime)
        self.backbone.requires_grad_(False)
        self.blocks = existing_blocks(config.e_blocks, len(self.backbone.blocks), "strategies.hide_prompt.e_blocks")
        self.prompted = PromptedViT(self.backbone, self.blocks, runtime=runtime)
        attn_dim, dim, device = self.backbone.blocks[0].attn.qkv.out_features // 3, self.feature_dim, runtime.device
        shape = (0, len(self.blocks), 2, config.e_length, attn_dim)  # [task, block, key/value, token, attn_dim]
        self.register_buffer("old_prompts", torch.zeros(shape, device=device))  # the earlier tasks' (fixed)
        self.prompt = nn.Parameter(torch.zeros(shape, device=device))  # the current task's, once a task started
        self.tii = TaskIdentityClassifier(dim, config.tii_hidden, config.head_init).to(device)
        self.register_buffer("unit_tasks", torch.zeros(0, dtype=torch.long, device=device))  # each TII unit's task
        self.head = GrowingClassifier(dim, config.head_init).to(device)
        self.uninstructed = ClassCentroids(dim, config.centroids).to(device)  # frozen features, by TII unit
        self.instructed = ClassCentroids(dim, config.centroids).to(device)  # prompted features, by class

    # the three parts at test time

    def selected_task(self, x: torch.Tensor) -> torch.Tensor:
        """TII: the task of each image's highest-scoring unit on its uninstructed features."""
        return self.unit_tasks[self.tii(self.prompted.query(x).float()).argmax(dim=1)]

    def prefixes(self, prompts: torch.Tensor) -> dict[int, Prefix]:
        """Block -> (keys, values) of `prompts`: one task's (blocks, 2, length, dim) or one per image."""
        return {block: (prompts[..., i, 0, :, :], prompts[..., i, 1, :, :]) for i, block in enumerate(self.blocks)}

    def prompted_features(self, x: torch.Tensor, prompts: torch.Tensor) -> torch.Tensor:
        return self.prompted.pre_logits(self.prompted.tokens(x, prefixes=self.prefixes(prompts)))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The [CLS] under the prompt of each image's inferred task; before the first task, the backbone's."""
        if len(self.unit_tasks) == 0:
            return self.backbone(x)
        return self.prompted_features(x, torch.cat([self.old_prompts, self.prompt])[self.selected_task(x)])

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features)

    def predict(self, x: torch.Tensor, task_id: Optional[int] = None) -> torch.Tensor:
        return self.head(self.features(x))

    # training, task by task

    def train_task(self, task: Task) -> None:
        self.backbone.eval()
        self.head.grow(task.num_outputs)
        earlier_units = self.add_units(task)
        self.add_prompt()
        self.train_task_identity(task, earlier_units)
        self.train_prompt(task)
        features, labels = task_features(lambda x: self.prompted_features(x, self.prompt[0]), task.train_unaugmented,
                                         self.runtime)
        self.instructed.add(features, labels, task.index)
        if task.index > 0 and self.config.ca_epochs > 0:
            align(self.head, self.instructed, per_centroid=self.config.ca_samples, batches=earlier_units,
                  lr=self.config.ca_lr, epochs=self.config.ca_epochs, runtime=self.runtime,
                  desc=f"HiDe-Prompt TAP {task.name}")

    @torch.no_grad()
    def add_units(self, task: Task) -> int:
        """One TII unit per class of `task`; returns the number of units of the earlier tasks."""
        earlier = len(self.unit_tasks)
        self.tii.head.grow(earlier + len(task.labels))
        self.unit_tasks = torch.cat([self.unit_tasks, self.unit_tasks.new_full((len(task.labels),), task.index)])
        return earlier

    @torch.no_grad()
    def add_prompt(self) -> None:
        """The previous task's prompt joins the fixed ones; the new one starts as its copy (the first: U(-1, 1))."""
        self.old_prompts = torch.cat([self.old_prompts, self.prompt.detach()])
        start = self.old_prompts[-1:].clone() if len(self.old_prompts) else uniform(*self.prompt.shape[1:],
                                                                                    device=self.prompt.device)[None]
        self.prompt = nn.Parameter(start)

    def mixed_prompt(self) -> torch.Tensor:
        """(1 - m) P_t + m mean(P_<t): what task t trains through and finally stores (P_0 alone for the first)."""
        if len(self.old_prompts) == 0:
            return self.prompt[0]
        m = self.config.prompt_momentum
        return (1 - m) * self.prompt[0] + m * self.old_prompts.mean(dim=0)

    def train_task_identity(self, task: Task, earlier_units: int) -> None:
        """TII on the frozen features: cross-entropy over the task's units, then (from the second task) alignment on
        samples of every unit's uninstructed statistics."""
        data, query = frozen_prefix_data(self.prompted.query, task, self.runtime)
        _, position = local_units(task.labels, task.num_outputs, self.runtime.device)
        units = slice(earlier_units, earlier_units + len(task.labels))

        def loss(items: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
            return F.cross_entropy(self.tii(query(items).float())[:, units], position[labels])

        train = replace(self.config.train_config(), epochs=self.config.tii_epochs, lr=self.config.tii_lr,
                        schedule="constant")
        fit(loss, list(self.tii.parameters()), data, train, self.runtime, desc=f"HiDe-Prompt TII {task.name}")
        features, labels = task_features(self.prompted.query, task.train_unaugmented, self.runtime)
        self.uninstructed.add(features, earlier_units + position[labels], task.index)
        if task.index > 0 and self.config.ca_epochs > 0:
            align(self.tii, self.uninstructed, per_centroid=self.config.tii_ca_samples, batches=earlier_units,
                  lr=self.config.tii_ca_lr, epochs=self.config.ca_epochs, runtime=self.runtime,
                  desc=f"HiDe-Prompt TII alignment {task.name}")

    def train_prompt(self, task: Task) -> None:
        """WTP: the task's prompt (mixed with the earlier ones) and the head, cross-entropy over the task's classes
        plus the contrastive term against the earlier classes' instructed cluster means; then the mixture is stored."""
        anchors = self.instructed.anchors(before_task=task.index)

        def loss(images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
            features = self.prompted_features(images, self.mixed_prompt())
            ce = task_cross_entropy(self.head(features), labels, task, "local")
            return ce + self.config.contrast * contrastive(features, anchors) if self.config.contrast else ce

        config = self.config
        groups = [{"params": [self.prompt], "lr": config.lr},
                  {"params": list(self.head.parameters()), "lr": config.lr * config.head_lr_scale}]
        fit(loss, groups, training_data(task, self.runtime), config.train_config(), self.runtime,
            desc=f"HiDe-Prompt WTP {task.name}")
        with torch.no_grad():
            self.prompt.copy_(self.mixed_prompt()[None])

    def report(self) -> dict[str, Any]:
        return {"protocol": protocol(
            "task-identity inference: the task of the best unit of an MLP head on the frozen features",
            head="[CLS] output", training_prompt="the task's own prompt (task identity given in training)",
            replay_memory="none (k-means cluster means and variances of features, sampled for alignment)")}
