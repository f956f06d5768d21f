"""CL-LoRA (He, Duan, Zhu; CVPR 2025, "CL-LoRA: Continual Low-Rank Adaptation for Rehearsal-Free Class-Incremental
Learning"; arXiv 2505.24816): a task-shared LoRA in the first half of the blocks, kept by distillation, and a
task-specific LoRA per task in the second half, scaled by learnable block-wise weights; each task's classes are
scored by prototypes in that task's own branch.

As the official code (JiangpengHe/CL-LoRA@df4e74e, a LAMDA-PILOT fork: `backbone/vit_cllora.py`, `models/cllora.py`,
`utils/inc_net.py::OurNet`, `backbone/linears.py::CosineLinearFeature`, `exps/*.json`):
- Every adapter adds `B A x` to the query and value rows of a block's fused qkv (`msa: [1, 0, 1]`, `targets`), A
  (r x d) the down-projection, B (d x r) the up-projection, zero at first (vit_cllora.py:23-63, 98-111; the code
  names them the other way round: its `lora_B` projects down).
- Task-shared LoRA in blocks 0 .. `shared_blocks` - 1 (`general_pos` 0-5 of 12): A a fixed random orthogonal matrix
  (rows orthonormal: Q of the QR of a U[0, 1) d x r matrix, transposed; vit_cllora.py:41-45), never trained
  (vit_cllora.py:651-659, 343-351); B trains in every task.
- Task-specific LoRA in the remaining blocks (`specfic_pos` 6-11): each task a new pair, A initialised the same
  random orthogonal way but trained, B zero; its update is multiplied by that task's block weight for the block and
  the q / k / v part: a 3 x (specific blocks) matrix per task drawn from U(0.5, 1.5) (vit_cllora.py:208-211,
  363-367), trained with its task, then frozen with the task's adapters.
- Training task t: a fresh cosine head over the task's classes (PILOT's CosineLinear: sigma cos(f, w), rows
  U(+-1/sqrt(d)), sigma from 1; `strategies._first_session.CosineHead`) on the current network (shared LoRA, task t's
  LoRA), cross-entropy over the task's classes; SGD (momentum 0.9) on every trainable tensor (cllora.py:280-301).
  From task 1 on, each batch first takes a distillation step, then the classification step (cllora.py:342-385):
  1. Distillation: the features after the shared blocks alone (final norm, class token; `forward_general_cls`,
     vit_cllora.py:574-602) with the shared LoRA as it is (student) and as the previous task left it (teacher), both
     through the head (which learns from both sides, as in the code); loss 5 * KD(student, teacher) at temperature
     2, KD = -(1/n) sum softmax(t/T) . log_softmax(s/T) (cllora.py:17-20, 357-364). Gradient reassignment: each
     row i of a shared up-projection's gradient is multiplied by d ||B_teacher[i]|| / sum_j ||B_teacher[j]||, the
     teacher's row norms normalised to mean 1, so the rows that carried the old tasks' knowledge move most
     (cllora.py:370-376). Then an SGD step.
  2. Classification: cross-entropy + 1e-4 * mean over old tasks k of |cos(vec w_k, vec w_t)|, the block weights'
     orthogonality to the old tasks' (cllora.py:23-42, 378-380); an SGD step.
- After task t: the prototype of each of its classes is the mean of its training images' features (test
  transform) in task t's branch (shared LoRA as now, task t's LoRA and block weights), kept for good
  (cllora.py:94-134).
- Inference: one branch per task seen (the shared blocks once, then the specific blocks with task i's LoRA and block
  weights), each branch scoring its own task's classes by cosine to their prototypes, sigma 1
  (`forward_diagonal`, linears.py:301-325; vit_cllora.py:420-485). The reference logs the task-ID accuracy of these
  logits ("Task correct"), the suite's `task_prediction_acc`; nothing is selected before the branches run, so the
  strategy does not declare `selects_task`. `features` (what retention protocols score) are the newest task's branch.

Presets (`preset:` fills the fields left null): `mini` (default; CPU-sized: 1 epoch, batch 32, lr 0.05, wd 1e-4,
rank 8; 2 epochs gave the same accuracies on the mini streams at twice the training time), `reference`
(exps/cifar.json: CIFAR-100 in 20 tasks, 30 epochs, batch 64, lr 0.03, wd 1e-4, rank 8) and `reference-imagenet-r`
(exps/inr.json: ImageNet-R in 40 tasks, 20 epochs, batch 32, lr 0.05, wd 5e-4, rank 10) and `reference-vtab`
(exps/vtab.json: VTAB in 5 unshuffled tasks, 45 epochs, batch 32, lr 0.03, wd 1e-4, rank 10). The
`reference*` presets run the code's recipe (benchmark/recipe.py): fp32; [0, 1] pixels, RandomResizedCrop scale
(0.05, 1), test Resize(256, bicubic) + CenterCrop(224) (`input: unnormalised`, utils/data.py:95-119);
CosineAnnealingLR(T_max=epochs, eta_min=0) stepped per epoch (`schedule: cosine-epochs`, cllora.py:303-311). The
`mini` preset keeps the suite's pipeline and precision and anneals per step.

Deviations from the reference:
- The classification step's forward pass runs after the distillation step. The reference computes its logits before
  that step and back-propagates through them after the step has changed the shared up-projections and the head in
  place (cllora.py:351, 377, 384), which current PyTorch refuses; here both steps see the parameters as they are.
- Gradient reassignment with a teacher whose up-projection is all zero (nothing trained) leaves the gradient as it
  is (the reference divides by zero).
- The shared blocks run once per image at inference and every branch starts from their output (the reference runs
  the whole network per branch: the same numbers, more work). Branch switches re-merge the specific layers' updates
  (LoRALinear merges in eval mode), which the FLOP count charges to every prediction (under 1% on ViT-B/16).
- The head trained with each task is dropped afterwards (the reference keeps it, unused, in `fc_list`); the
  off-diagonal prototypes the reference also computes (current classes in old branches) are never read by its
  inference and are not computed.
- Domain-incremental streams (not in the paper): each task stores prototypes of the classes it brings in its own
  branch, and a class's logit is the largest cosine over the branches that hold it (in a class-incremental stream
  every class is in one branch: the reference's logits).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any, Iterator, Mapping, Optional

import torch
import torch.nn.functional as F
from torch import nn

from benchmark.config import apply_preset, require
from benchmark.recipe import RecipeConfig
from benchmark.streams import Task
from strategies._first_session import CosineHead
from strategies._lora import (LoRALinear, LowRank, WeightedLowRank, add_lora, lora_layers, only_adapters,
                              stored_tasks, target_layer, task_prefix)
from strategies._loop import SCHEDULES, check_finite, local_units, shuffled_batches, training_data
from strategies._prototypes import cosine_logits, task_features
from strategies._tuned import set_train_modes
from strategies._vit import prefix_stage, suffix_stage
from strategies.base import Strategy, register

PARTS = ("q", "k", "v")  # rows of a task's block weights: the parts of timm's fused qkv (vit_cllora.py:210)
SHARED, TEACHER = "shared_", "teacher_"  # adapter names in the shared blocks: the trained LoRA, its frozen copy
BLOCK_WEIGHT_INIT = (0.5, 1.5)  # U(0.5, 1.5), vit_cllora.py:211
RECIPE = dict(input="unnormalised", schedule="cosine-epochs", precision="fp32")
PRESETS = {
    "mini": dict(epochs=1, batch_size=32, lr=0.05, weight_decay=1e-4, rank=8, schedule="cosine"),
    "reference": dict(epochs=30, batch_size=64, lr=0.03, weight_decay=1e-4, rank=8, **RECIPE),
    "reference-imagenet-r": dict(epochs=20, batch_size=32, lr=0.05, weight_decay=5e-4, rank=10, **RECIPE),
    "reference-vtab": dict(epochs=45, batch_size=32, lr=0.03, weight_decay=1e-4, rank=10, **RECIPE),
}


@dataclass(frozen=True)
class CLLoRAConfig(RecipeConfig):
    preset: str = "mini"  # fills the fields left null: mini, reference (CIFAR-100), reference-imagenet-r, -vtab
    epochs: Optional[int] = None  # per task (init_epochs = later_epochs)
    batch_size: Optional[int] = None
    lr: Optional[float] = None  # SGD, both steps of a batch
    weight_decay: Optional[float] = None
    schedule: Optional[str] = None  # cosine (per step; mini) or cosine-epochs (the reference's, per epoch)
    momentum: float = 0.9
    rank: Optional[int] = None  # r of every adapter, shared and task-specific (the reference's ffn_num)
    targets: tuple[str, ...] = ("q", "v")  # adapted parts of qkv (msa [1, 0, 1])
    shared_blocks: Optional[int] = None  # leading blocks with the task-shared LoRA; null: half the depth (6 of 12)
    distill_weight: float = 5.0  # kd_ratio; 0: no distillation step
    temperature: float = 2.0  # of the distillation
    orthogonality_weight: float = 1e-4  # of the block weights' orthogonality to the old tasks'

    def __post_init__(self) -> None:
        apply_preset(self, PRESETS)
        self.resolve_recipe()
        require(self.epochs >= 1, "epochs", ">= 1", self.epochs)
        require(self.batch_size >= 1, "batch_size", ">= 1", self.batch_size)
        require(self.lr > 0, "lr", "> 0", self.lr)
        require(self.weight_decay >= 0, "weight_decay", ">= 0", self.weight_decay)
        require(self.schedule in SCHEDULES, "schedule", f"one of {', '.join(SCHEDULES)}", self.schedule)
        require(0 <= self.momentum < 1, "momentum", "in [0, 1)", self.momentum)
        require(self.rank >= 1, "rank", ">= 1", self.rank)
        require(len(self.targets) >= 1 and set(self.targets) <= set(PARTS)
                and len(set(self.targets)) == len(self.targets), "targets", "distinct names from q, k, v",
                list(self.targets))
        require(self.shared_blocks is None or self.shared_blocks >= 1, "shared_blocks", ">= 1 or null",
                self.shared_blocks)
        require(self.distill_weight >= 0, "distill_weight", ">= 0", self.distill_weight)
        require(self.temperature > 0, "temperature", "> 0", self.temperature)
        require(self.orthogonality_weight >= 0, "orthogonality_weight", ">= 0", self.orthogonality_weight)


def random_orthogonal_rows(rank: int, dim: int, device: torch.device) -> torch.Tensor:
    """A (rank x dim) matrix with orthonormal rows: Q of the reduced QR of a U[0, 1) dim x rank matrix, transposed."""
    q, _ = torch.linalg.qr(torch.rand(dim, rank, device=device))
    return q.T.contiguous()


def distillation(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """-(1/n) sum_i softmax(teacher_i / T) . log_softmax(student_i / T): cross-entropy to the softened teacher."""
    return -(F.softmax(teacher / temperature, dim=1) * F.log_softmax(student / temperature, dim=1)).sum() / len(student)


def reassignment_weights(teacher_up: torch.Tensor) -> torch.Tensor:
    """Per output row i of an up-projection: d ||B[i]|| / sum_j ||B[j]|| (mean 1); all ones if B is zero."""
    norms = teacher_up.norm(dim=1)
    total = norms.sum()
    return len(norms) * norms / total if total > 0 else torch.ones_like(norms)


def orthogonality(old: list[torch.Tensor], current: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Mean over `old` of |<w_k / (||w_k|| + eps), w / (||w|| + eps)>|, the tensors flattened; 0 without old ones."""
    if not old:
        return current.new_zeros(())
    unit = current.flatten() / (current.norm() + eps)
    return torch.stack([(w.flatten() / (w.norm() + eps) * unit).sum().abs() for w in old]).mean()


class BranchPrototypes(nn.Module):
    """Class prototypes per branch: rows of (mean feature, output unit, task whose branch computed it)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("means", torch.zeros(0, dim))
        self.register_buffer("units", torch.zeros(0, dtype=torch.long))
        self.register_buffer("tasks", torch.zeros(0, dtype=torch.long))

    @torch.no_grad()
    def add(self, task: int, features: torch.Tensor, labels: torch.Tensor) -> None:
        """One row per class in `labels`: the mean of its `features` (summed in float64)."""
        units = labels.unique()
        means = torch.stack([features[labels == unit].double().mean(0) for unit in units])
        self.means = torch.cat([self.means, means.to(self.means)])
        self.units = torch.cat([self.units, units.to(self.units)])
        self.tasks = torch.cat([self.tasks, torch.full_like(units, task).to(self.tasks)])

    def forward(self, branches: list[torch.Tensor]) -> torch.Tensor:
        """Logits over every unit held: cos(branch t's features, each of task t's prototypes), the largest where a unit
        has prototypes in several branches; in float32 even under autocast."""
        n = len(branches[0])
        with torch.autocast(self.means.device.type, enabled=False):
            scores = torch.cat([cosine_logits(f.float(), self.means[self.tasks == t])
                                for t, f in enumerate(branches)], dim=1)
        units = torch.cat([self.units[self.tasks == t] for t in range(len(branches))])
        logits = scores.new_full((n, int(self.units.max()) + 1), float("-inf"))
        return logits.scatter_reduce(1, units.expand(n, -1), scores, "amax")


@register("cl_lora")
class CLLoRA(Strategy):
    Config = CLLoRAConfig
    feature_free = ("prototypes",)

    def __init__(self, backbone: nn.Module, config: CLLoRAConfig, runtime) -> None:
        super().__init__(backbone, config, runtime)
        depth = len(self.backbone.blocks)
        self.cut = depth // 2 if config.shared_blocks is None else config.shared_blocks
        require(self.cut < depth, "strategies.cl_lora.shared_blocks",
                f"less than the backbone's depth ({depth} blocks), so that task-specific blocks remain", self.cut)
        require(config.rank <= self.feature_dim, "strategies.cl_lora.rank",
                f"at most the backbone's width ({self.feature_dim})", config.rank)
        self.backbone.requires_grad_(False)
        for adapter in add_lora(self.backbone.blocks[:self.cut], config.targets, config.rank, 1.0, SHARED):
            adapter.A = nn.Parameter(random_orthogonal_rows(config.rank, adapter.A.shape[1], runtime.device),
                                     requires_grad=False)
        for layer in self.shared_layers():
            layer.only = SHARED
        self.block_weights = nn.ParameterList()  # one (3 x specific blocks) matrix per task
        self.prototypes = BranchPrototypes(self.feature_dim).to(runtime.device)

    @property
    def tasks_done(self) -> int:
        return len(self.block_weights)

    def shared_layers(self) -> list[LoRALinear]:
        return lora_layers(self.backbone.blocks[:self.cut])

    def specific_layers(self) -> list[LoRALinear]:
        return lora_layers(self.backbone.blocks[self.cut:])

    def train_task(self, task: Task) -> None:
        self.start_task()
        head = CosineHead(self.feature_dim, len(task.labels)).to(self.runtime.device)
        self.fit(task, head)
        self.eval()
        features, labels = task_features(self.features, task.train_unaugmented, self.runtime)
        self.prototypes.add(self.tasks_done - 1, features, labels)

    def start_task(self) -> None:
        """Freeze the previous task's LoRA and block weights and keep the shared LoRA as a teacher; add this task's."""
        if self.tasks_done > 0:
            self.block_weights[-1].requires_grad_(False)
            for layer in self.specific_layers():
                layer.requires_grad_(False)
            self.keep_teacher()
        self.add_task_adapters()

    def add_task_adapters(self) -> None:
        """The new task's block weights (U(0.5, 1.5)) and its LoRA in every specific block, A random orthogonal and
        trainable, B zero, scaled by its block weight; the specific blocks apply it from now on."""
        config, device, index = self.config, self.runtime.device, self.tasks_done
        specific = self.backbone.blocks[self.cut:]
        weights = nn.Parameter(torch.empty(len(PARTS), len(specific), device=device).uniform_(*BLOCK_WEIGHT_INIT))
        for position, block in enumerate(specific):
            for target in config.targets:
                make = partial(WeightedLowRank, weights=weights, index=(PARTS.index(target), position))
                adapter, = add_lora([block], [target], config.rank, 1.0, task_prefix(index), make)
                adapter.A = nn.Parameter(random_orthogonal_rows(config.rank, adapter.A.shape[1], device))
        self.block_weights.append(weights)
        for layer in self.specific_layers():
            layer.only = task_prefix(index)

    @torch.no_grad()
    def keep_teacher(self) -> None:
        """The teacher: a frozen copy of every shared up-projection as it is now, beside it in its layer, sharing the
        fixed down-projection."""
        for block in self.backbone.blocks[:self.cut]:
            for target in self.config.targets:
                layer = target_layer(block, target)
                student = layer.adapters[SHARED + target]
                if TEACHER + target not in layer.adapters:
                    layer.adapters[TEACHER + target] = LowRank(layer.in_features, student.rows, self.config.rank, 1.0)
                teacher = layer.adapters[TEACHER + target]
                teacher.A = student.A
                teacher.B = nn.Parameter(student.B.detach().clone(), requires_grad=False)

    def teacher_pairs(self) -> Iterator[tuple[LowRank, LowRank]]:
        """(student, teacher) of every shared target."""
        for block in self.backbone.blocks[:self.cut]:
            for target in self.config.targets:
                adapters = target_layer(block, target).adapters
                yield adapters[SHARED + target], adapters[TEACHER + target]

    def fit(self, task: Task, head: CosineHead) -> None:
        """SGD over the task's batches: from the second task on, a distillation step, then a classification step."""
        config, runtime, index = self.config, self.runtime, self.tasks_done - 1
        set_train_modes(self)
        head.train()
        parameters = [p for p in self.parameters() if p.requires_grad] + list(head.parameters())
        optimizer = torch.optim.SGD(parameters, lr=config.lr, momentum=config.momentum,
                                    weight_decay=config.weight_decay)
        batches = shuffled_batches(training_data(task, runtime), config.batch_size, runtime)
        schedule = SCHEDULES[config.schedule](optimizer, config.epochs, len(batches))
        _, position = local_units(task.labels, task.num_outputs, runtime.device)
        for epoch in runtime.bar(range(config.epochs), desc=f"cl_lora {task.name}"):
            losses = []
            for images, labels in batches:
                images = images.to(runtime.device, non_blocking=True)
                labels = position[labels.to(runtime.device, non_blocking=True)]
                distil = index > 0 and config.distill_weight > 0
                loss = self.distillation_step(images, head, optimizer) if distil else 0.0
                losses.append(loss + self.classification_step(images, labels, head, optimizer))
                if schedule is not None:
                    schedule.step()
            check_finite(losses, epoch, epoch * len(batches))

    def shared_features(self, images: torch.Tensor) -> torch.Tensor:
        """Final norm and pooling of the tokens after the shared blocks alone (the distillation's features)."""
        blocks = len(self.backbone.blocks)
        return suffix_stage(self.backbone, blocks)(prefix_stage(self.backbone, self.cut)(images))

    def distillation_step(self, images: torch.Tensor, head: CosineHead, optimizer) -> torch.Tensor:
        config = self.config
        with self.runtime.autocast():
            with torch.no_grad(), only_adapters(self.shared_layers(), TEACHER):
                teacher = self.shared_features(images)
            student = self.shared_features(images)
            loss = config.distill_weight * distillation(head(student), head(teacher), config.temperature)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        with torch.no_grad():
            for student, teacher in self.teacher_pairs():
                if student.B.grad is not None:
                    student.B.grad.mul_(reassignment_weights(teacher.B)[:, None])
        optimizer.step()
        return loss.detach()

    def classification_step(self, images: torch.Tensor, labels: torch.Tensor, head: CosineHead,
                            optimizer) -> torch.Tensor:
        with self.runtime.autocast():
            loss = F.cross_entropy(head(self.backbone(images)), labels)
            *old, current = self.block_weights
            loss = loss + self.config.orthogonality_weight * orthogonality(list(old), current)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.detach()

    def predict(self, x: torch.Tensor, task_id: Optional[int] = None) -> torch.Tensor:
        """Every task's branch from the shared blocks' output, each scoring its own classes by their prototypes."""
        if self.tasks_done == 0:  # no class yet; one pass, what one branch costs (a dry run sizes this)
            return self.features(x)[:, :0]
        tokens = prefix_stage(self.backbone, self.cut)(x)
        rest = suffix_stage(self.backbone, self.cut)
        branches = []
        for index in range(self.tasks_done):
            with only_adapters(self.specific_layers(), task_prefix(index)):
                branches.append(rest(tokens))
        return self.prototypes(branches)

    def prepare_to_load(self, state: Mapping[str, torch.Tensor]) -> None:
        """Rebuild the stored tasks' LoRA, block weights and teacher, as training left them, so their tensors load."""
        for _ in range(stored_tasks(state)):
            self.start_task()

    def report(self) -> dict[str, Any]:
        return {"shared_blocks": self.cut, "block_weights": [w.detach().tolist() for w in self.block_weights]}
