"""Selective LoRA (Bafghi et al., 2025, arXiv 2501.15377): LoRA blocks switched on or off by learned gates, a
sparsity penalty driving most of them off, one mask per task.

The construction follows TAPS (Wallingford et al., 2022), which the method extends; no official code was found, so
each choice below is TAPS's or ours (`../shared/reference/strategies.md`, section 4):
- Every targeted linear layer of every block (default: q, k, v, proj, fc1, fc2) gets a LoRA block `scale · B A`
  (A Kaiming-uniform, B zero) with a scalar gate score s: output `W0 x + 1[s >= tau] · scale · B A x`. The forward
  pass uses the hard 0/1 gate; the straight-through estimator gives s the gradient as if the gate were the identity
  (TAPS: dL/ds = <dL/dW, scale · B A>). s starts at `score_init` (0.15) above `threshold` tau (0.1), so every block
  starts on (TAPS values).
- Loss: task cross-entropy + `sparsity` (lambda) · mean |s| over the task's blocks (TAPS normalises by the block
  count), off during the first `warmup_epochs` of each task; SGD with momentum as TAPS (with Adam each score moves
  about its learning rate per step whatever lambda is, which makes lambda nearly inert: measured). Larger lambda:
  fewer active blocks. A block stays on while the task loss pulls its score up harder than lambda / (blocks) pushes
  it down; since B starts at zero, that pull is weak until B has learned (hence the warm-up): `score_lr` (the
  scores' own learning rate) sets how fast scores move, lambda how much a block must help to stay on. The defaults
  are tuned on the mini benchmark (docs/results-mini.md: the active fraction against lambda).
- Continual use (ours: the paper is single-task): task t trains a fresh set of blocks and gates on the pre-trained
  weights (earlier tasks' blocks are not applied while it trains), with the growing head; afterwards its mask is
  stored, its active blocks frozen and kept, its inactive blocks deleted (not stored, not computed).
- Inference, both modes reported: task-agnostic (`predict(x)`: every task's active blocks applied together, merged
  into the weights in eval mode, so zero FLOPs overhead) gives the accuracy matrix and the retention numbers;
  task-aware (`predict(x, task_id=t)`: task t's active blocks only) reproduces the network as it was at the end of
  task t and gives `accuracy_matrix_task_aware` (the head still scores every class seen: the task id selects blocks,
  not classes, so this is not task-incremental evaluation). In task-aware mode the untouched pre-trained backbone
  also remains available, so its retention would be the backbone's own: the result's `retention_mode` says which mode the
  retention numbers come from.
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Optional

import torch
from torch import nn

from benchmark.config import require
from benchmark.streams import Task
from strategies._lora import TARGETS, LowRank, add_lora, lora_layers, target_layer, target_rows, task_prefix
from strategies._loop import fit, task_cross_entropy
from strategies._tuned import TunedBackbone, set_train_modes
from strategies.lora import LoRAConfig
from strategies._vit import depth
from strategies.base import register


@dataclass(frozen=True)
class SelectiveLoRAConfig(LoRAConfig):
    """LoRA's `rank`, `alpha` and `targets` (here every layer of every block by default), plus the gates."""

    targets: tuple[str, ...] = tuple(TARGETS)  # adapted layers of every block: q, k, v, proj, fc1, fc2
    threshold: float = 0.1  # tau: a block is on while its score s >= tau (TAPS)
    score_init: float = 0.15  # s at the start of each task; above tau, so every block starts on (TAPS)
    sparsity: float = 0.9  # lambda of the penalty lambda * mean|s|; larger: fewer active blocks
    warmup_epochs: int = 1  # epochs of each task without the penalty (TAPS: 2 of 30)
    score_lr: float = 0.1  # learning rate of the gate scores (the other parameters use `lr`)
    optimizer: str = "sgd"  # as TAPS; with Adam every score moves ~lr per step whatever lambda, so lambda barely acts
    lr: float = 0.05

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.score_init >= self.threshold, "score_init", f">= threshold ({self.threshold})", self.score_init)
        require(self.sparsity >= 0, "sparsity", ">= 0", self.sparsity)
        require(0 <= self.warmup_epochs, "warmup_epochs", ">= 0", self.warmup_epochs)
        require(self.score_lr > 0, "score_lr", "> 0", self.score_lr)


class GatedLowRank(LowRank):
    """A LoRA block times the hard gate 1[s >= threshold], with the straight-through estimator for s."""

    def __init__(self, in_features: int, rows: tuple[int, int], rank: int, scale: float, threshold: float,
                 score_init: float) -> None:
        super().__init__(in_features, rows, rank, scale)
        self.threshold = threshold
        self.score = nn.Parameter(torch.tensor(score_init))

    def gate(self) -> torch.Tensor:
        """Forward: exactly 0 or 1. Backward: d gate / d s = 1."""
        hard = (self.score >= self.threshold).to(self.score.dtype)
        return hard + self.score - self.score.detach()

    def is_on(self) -> bool:
        return bool(self.score.detach() >= self.threshold)

    def delta_weight(self) -> torch.Tensor:
        return self.gate() * super().delta_weight()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gate().to(x.dtype) * super().forward(x)

    def tensors(self) -> tuple[torch.Tensor, ...]:
        return self.A, self.B, self.score


def frozen_block(block: LowRank) -> LowRank:
    """A plain LoRA block holding `block`'s A and B, not trainable: what an active gated block computes (gate 1)."""
    plain = LowRank(block.A.shape[1], block.rows, block.A.shape[0], block.scale)
    plain.A = nn.Parameter(block.A.detach(), requires_grad=False)
    plain.B = nn.Parameter(block.B.detach(), requires_grad=False)
    return plain


@register("selective_lora")
class SelectiveLoRA(TunedBackbone):
    Config = SelectiveLoRAConfig
    task_aware = True

    def __init__(self, backbone, config: SelectiveLoRAConfig, runtime) -> None:
        super().__init__(backbone, config, runtime)
        self.backbone.requires_grad_(False)
        self.block_names = [f"{b}.{t}" for b in range(depth(self.backbone)) for t in config.targets]
        self.register_buffer("masks", torch.zeros(0, len(self.block_names), device=runtime.device))
        self.penalty_on = False

    @property
    def tasks_done(self) -> int:
        return len(self.masks)

    def train_task(self, task: Task) -> None:
        config, index = self.config, self.tasks_done
        gated = functools.partial(GatedLowRank, threshold=config.threshold, score_init=config.score_init)
        blocks = add_lora(self.backbone.blocks, config.targets, config.rank, config.scale, task_prefix(index), gated)
        self.head.grow(task.num_outputs)
        scores = [block.score for block in blocks]
        others = [p for p in self.parameters() if p.requires_grad and all(p is not s for s in scores)]
        groups = [{"params": others}, {"params": scores, "lr": config.score_lr, "weight_decay": 0.0}]

        def loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            task_loss = task_cross_entropy(self.head(self.features(x)), y, task, config.loss)
            if not self.penalty_on:
                return task_loss
            return task_loss + config.sparsity * torch.stack(scores).abs().mean()

        def start_epoch(epoch: int) -> None:
            self.penalty_on = epoch >= config.warmup_epochs

        with self.only_task(index):
            set_train_modes(self)
            fit(loss, groups, task.train, config, self.runtime, desc=f"selective_lora {task.name}",
                on_epoch=start_epoch)
        self.settle(index)

    @torch.no_grad()
    def settle(self, index: int) -> None:
        """Store task `index`'s mask; keep its active blocks (frozen, plain LoRA blocks), delete the others."""
        mask = []
        for block in self.backbone.blocks:
            for target in self.config.targets:
                layer, name = target_layer(block, target), task_prefix(index) + target
                gated = layer.adapters[name]
                mask.append(float(gated.is_on()))
                if gated.is_on():
                    layer.adapters[name] = frozen_block(gated)
                else:
                    del layer.adapters[name]
        self.masks = torch.cat([self.masks, self.masks.new_tensor([mask])])

    @contextlib.contextmanager
    def only_task(self, index: Optional[int]) -> Iterator[None]:
        """Apply only task `index`'s blocks inside the block (None: every task's)."""
        layers = lora_layers(self.backbone)
        for layer in layers:
            layer.only = None if index is None else task_prefix(index)
        try:
            yield
        finally:
            for layer in layers:
                layer.only = None

    def predict(self, x: torch.Tensor, task_id: Optional[int] = None) -> torch.Tensor:
        with self.only_task(task_id):
            return self.head(self.features(x))

    def prepare_to_load(self, state: Mapping[str, torch.Tensor]) -> None:
        """Rebuild the stored active blocks (frozen) that the checkpoint's masks name, so their tensors can load."""
        for index, mask in enumerate(state.get("masks", self.masks).tolist()):
            for name, on in zip(self.block_names, mask):
                if on:
                    block, target = name.split(".")
                    layer = target_layer(self.backbone.blocks[int(block)], target)
                    empty = LowRank(layer.in_features, target_rows(layer, target), self.config.rank, self.config.scale)
                    layer.adapters[task_prefix(index) + target] = empty.to(self.runtime.device).requires_grad_(False)

    def report(self) -> dict[str, Any]:
        per_task = self.masks.mean(1).tolist()
        return {
            "gate_masks": self.masks.int().tolist(),
            "gate_blocks": self.block_names,
            "retention_mode": "task-agnostic",
            "metrics": {"active_fraction": float(self.masks.mean()) if self.tasks_done else 0.0,
                        "active_fraction_per_task": per_task},
        }
