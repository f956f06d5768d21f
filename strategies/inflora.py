"""InfLoRA (Liang & Li, CVPR 2024, "InfLoRA: Interference-Free Low-Rank Adaptation for Continual Learning"): per task
a LoRA on the keys and values of every block whose down-projection A is designed from the task's data and never
trained, so that the new update stays out of the input subspace that old tasks use.

As the reference (`liangyanshuo/InfLoRA`: `methods/inflora.py`, `models/vit_inflora.py::Attention_LoRA`,
`configs/*_inflora.json`):
- Before task t, one gradient-free, batched pass over the task's training images through the current network (old
  tasks' updates merged) gives every block's input covariance C = mean over images and tokens of x x^T, x the input of
  the block's `qkv` layer. A = top-r left singular vectors of C restricted to the subspace old tasks leave free (the
  DualGPM record, `strategies/_dualgpm.py`: (I - U U^T) C or U U^T C), transposed, divided by sqrt(3); the key and
  value updates share it (the reference copies the same A into both). A is frozen; B starts at zero.
- Only task t's up-projections B (keys and values of every block) and task t's head train (one linear head per
  task, the reference's `classifier_pool`; earlier heads frozen); Adam (here AdamW with weight decay 0: the same),
  cross-entropy over the current task's classes. The network trains in eval mode, as the reference's
  (`methods/inflora.py:214`): dropout, attention dropout and drop-path are off (only the adapted layers are switched
  to their unmerged, differentiable path).
- After task t, a second pass collects the covariances through the trained network and extends the record, at the
  energy threshold lamb + (1 - lamb) t / T (`threshold_start` = lamb, `schedule_tasks` = T, the reference's
  `total_sessions`); then task t's B are frozen.
- Inference: every task's updates merged into the weights, one forward pass, every head's logits concatenated.

Presets (`preset:` fills the fields left null): `mini` (default; CPU-sized for the mini benchmark: 3 epochs, batch
32, lr 1e-3, rank 8, lamb 0.95, T 5), `reference` (ViT-B/16 on CIFAR-100 in 10 tasks, configs/cifar100_inflora.json:
20 epochs, batch 128, lr 5e-4, rank 10, lamb 0.95, T 10) and `reference-imagenet-r` (configs/mimg10_inflora.json:
50 epochs, lamb 0.98, otherwise the same). The `reference*` presets run the reference's recipe (liangyanshuo/InfLoRA
@e08b00e; benchmark/recipe.py): fp32; [0, 1] pixels (`Normalize(0, 1)`), torchvision's RandomResizedCrop (scale
(0.08, 1), bilinear), test Resize(224) on CIFAR-100 (`input: unnormalised-bilinear-resize224`) and Resize(256) +
CenterCrop(224) on ImageNet-R (`input: unnormalised-bilinear`), `utils/data.py:113-178`; GT-RIPL's `CosineSchedule`
stepped per epoch (`schedule: coda-cosine`, `utils/schedulers.py:54`, `methods/inflora.py:238`); each head as
nn.Linear initialises it (`head_init: linear`, weight and bias U(+-1/sqrt(d))). The reference's published runs keep
the natural class order with seeds 0-4 (its configs; a stream's `shuffle: false`); its `1993.log` runs use the seeded
order the suite's streams use by default.

Deviations from the reference:
- The `mini` preset anneals the lr per step (`schedule: cosine`), starts heads with a zero bias
  (`head_init: linear_zero_bias`) and keeps the suite's input pipeline and precision.
- Covariances are summed in float64 (the reference keeps a running mean in float32); see `_dualgpm.py` for the
  record's one deviation.
- The reference's k-means keys (`clustering`) serve only its task-identity diagnostics and are not computed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import Any, Iterator, Mapping, Optional

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from benchmark.config import apply_preset, require
from benchmark.streams import Task
from strategies._dualgpm import SubspaceRecord, threshold
from strategies._heads import TaskHeads
from strategies._lora import (LoRALinear, LowRank, add_lora, lora_bytes, stored_tasks, task_adapters,
                              task_prefix)
from strategies._loop import TrainConfig, fit, task_cross_entropy, training_data
from strategies.base import Strategy, register

TARGETS = ("k", "v")
A_DIVISOR = math.sqrt(3)  # the reference's scaling of the designed down-projection
RECIPE = dict(schedule="coda-cosine", head_init="linear", precision="fp32")  # methods/inflora.py:168, 238
PRESETS = {
    "mini": dict(epochs=3, batch_size=32, lr=1e-3, rank=8, threshold_start=0.95, schedule_tasks=5,
                 schedule="cosine", head_init="linear_zero_bias"),
    "reference": dict(epochs=20, batch_size=128, lr=5e-4, rank=10, threshold_start=0.95, schedule_tasks=10,
                      input="unnormalised-bilinear-resize224", **RECIPE),
    "reference-imagenet-r": dict(epochs=50, batch_size=128, lr=5e-4, rank=10, threshold_start=0.98, schedule_tasks=10,
                                 input="unnormalised-bilinear", **RECIPE),
}


@dataclass(frozen=True)
class InfLoRAConfig(TrainConfig):
    preset: str = "mini"  # fills the fields left null: mini, reference (CIFAR-100), reference-imagenet-r
    epochs: Optional[int] = None  # per task
    batch_size: Optional[int] = None
    lr: Optional[float] = None  # Adam (AdamW, weight decay 0)
    schedule: Optional[str] = None  # cosine (per step; mini) or coda-cosine (the reference's, per epoch)
    rank: Optional[int] = None  # r of every task's key and value updates (reference 10)
    threshold_start: Optional[float] = None  # lamb: the record's energy threshold after the first task
    threshold_end: float = 1.0  # lame: the threshold the schedule moves towards
    schedule_tasks: Optional[int] = None  # T of the schedule (the reference's total_sessions)

    def __post_init__(self) -> None:
        apply_preset(self, PRESETS)
        super().__post_init__()
        require(self.rank >= 1, "rank", ">= 1", self.rank)
        require(0 < self.threshold_start <= 1, "threshold_start", "in (0, 1]", self.threshold_start)
        require(self.threshold_start <= self.threshold_end <= 1, "threshold_end",
                f"in [threshold_start ({self.threshold_start}), 1]", self.threshold_end)
        require(self.schedule_tasks >= 1, "schedule_tasks", ">= 1", self.schedule_tasks)


def down_projection(record: SubspaceRecord, layer: int, covariance: torch.Tensor, rank: int) -> torch.Tensor:
    """A (rank x d): the top left singular vectors of the covariance restricted to the free subspace, / sqrt(3)."""
    U = torch.linalg.svd(record.restrict(layer, covariance.double())).U
    return (U[:, :rank].T / A_DIVISOR).float()


def image_batches(data: Dataset, runtime) -> Iterator[torch.Tensor]:
    """`data`'s images in order, in evaluation-sized batches: sliced when in memory, else through a loader with its
    own generator (so that no draw from the global RNG shifts training's shuffling)."""
    if isinstance(data, TensorDataset):
        yield from data.tensors[0].split(runtime.eval_batch)
        return
    loader = DataLoader(data, batch_size=runtime.eval_batch, shuffle=False, generator=torch.Generator(),
                        **runtime.loader_options(data, persistent=False))
    for images, _ in loader:
        yield images


@register("inflora")
class InfLoRA(Strategy):
    Config = InfLoRAConfig

    def __init__(self, backbone: nn.Module, config: InfLoRAConfig, runtime) -> None:
        super().__init__(backbone, config, runtime)
        self.backbone.requires_grad_(False)
        self.heads = TaskHeads(self.feature_dim, config.head_init).to(runtime.device)
        self.record = SubspaceRecord(len(self.backbone.blocks), self.backbone.blocks[0].attn.qkv.in_features)
        self.record.to(runtime.device)
        self.tasks_done = 0

    def train_task(self, task: Task) -> None:
        config, index = self.config, self.tasks_done
        data = training_data(task, self.runtime)
        self.add_task_updates(index, self.input_covariances(data))
        self.heads.add(task.num_outputs)
        self.train_in_eval_mode()
        loss = lambda x, y: task_cross_entropy(self.predict(x), y, task, config.loss)  # noqa: E731
        fit(loss, [p for p in self.parameters() if p.requires_grad], data, config, self.runtime,
            desc=f"inflora {task.name}")
        share = threshold(index, config.schedule_tasks, config.threshold_start, config.threshold_end)
        for layer, covariance in enumerate(self.input_covariances(data)):
            self.record.update(layer, covariance, share)
        for adapter in task_adapters(self.backbone.blocks, TARGETS, index):
            adapter.requires_grad_(False)
        self.tasks_done += 1

    def train_in_eval_mode(self) -> None:
        """As the reference trains: the network in eval mode (dropout, attention dropout and drop-path off), only the
        adapted layers in train mode, so that they run their unmerged, differentiable path."""
        self.eval()
        for module in self.modules():
            if isinstance(module, LoRALinear):
                module.train()

    def training_bytes(self) -> int:
        """One task's key and value updates (added at every task)."""
        return lora_bytes(self.backbone.blocks, TARGETS, self.config.rank)

    def add_task_updates(self, index: int, covariances: Optional[list[torch.Tensor]]) -> list[LowRank]:
        """Task `index`'s key and value updates, their shared A designed from `covariances` (None: left as built, to
        be overwritten by a checkpoint) and frozen; B zero."""
        adapters = add_lora(self.backbone.blocks, TARGETS, self.config.rank, 1.0, task_prefix(index))
        for layer, (key, value) in enumerate(zip(adapters[0::2], adapters[1::2])):
            A = key.A if covariances is None else down_projection(self.record, layer, covariances[layer],
                                                                   self.config.rank)
            key.A = value.A = nn.Parameter(A.detach().to(self.runtime.device), requires_grad=False)
        return adapters

    @torch.no_grad()
    def input_covariances(self, data: Dataset) -> list[torch.Tensor]:
        """Every block's `qkv` input covariance over `data` (mean of x x^T over images and tokens, float64): one
        batched pass in eval mode (updates merged), without autograd and without drawing from the global RNG."""
        layers = [block.attn.qkv for block in self.backbone.blocks]
        dim = layers[0].in_features
        sums = [torch.zeros(dim, dim, dtype=torch.float64, device=self.runtime.device) for _ in layers]
        tokens = [0]

        def accumulate(layer: int, module: nn.Module, args: tuple) -> None:
            x = args[0].reshape(-1, dim).float()
            sums[layer] += (x.T @ x).double()
            if layer == 0:
                tokens[0] += x.shape[0]

        hooks = [layer.register_forward_pre_hook(partial(accumulate, i)) for i, layer in enumerate(layers)]
        self.eval()
        try:
            for images in image_batches(data, self.runtime):
                with self.runtime.autocast():
                    self.backbone(images.to(self.runtime.device, non_blocking=True))
        finally:
            for hook in hooks:
                hook.remove()
        return [total / tokens[0] for total in sums]

    def predict(self, x: torch.Tensor, task_id: Optional[int] = None) -> torch.Tensor:
        return self.heads(self.backbone(x))

    def prepare_to_load(self, state: Mapping[str, torch.Tensor]) -> None:
        """Rebuild the stored tasks' (frozen) updates, so that their tensors can load."""
        self.tasks_done = stored_tasks(state)
        for index in range(self.tasks_done):
            for adapter in self.add_task_updates(index, None):
                adapter.requires_grad_(False)

    def report(self) -> dict[str, Any]:
        return {"subspace_record": {"dims": [self.record.basis(i).shape[1] for i in range(self.record.layers)],
                                    "retain": self.record.retain.tolist()}}
