"""The common shape of the fine-tuning family (full fine-tuning, linear probing, top-k, LoRA, block expansion): a
growing linear head on the backbone's features, trained with the shared loop together with whichever backbone
parameters the strategy leaves trainable. A strategy of this family only says what trains (and adds modules).

Two things follow from `requires_grad` alone, so every member gets them right the same way: modules that hold
trainable parameters are in train mode and all others in eval mode (a frozen block runs as it does at inference);
and the frozen prefix of the network (the embeddings and the blocks before the first trainable one) is run without
autograd, its outputs computed once per task when the training data is not augmented.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn
from torch.utils.data import Dataset

from benchmark.sharing import module_fingerprint
from benchmark.streams import Task
from strategies._heads import GrowingClassifier
from strategies._loop import Stage, fit, frozen_prefix_data, task_cross_entropy, training_data
from strategies._vit import prefix_stage, suffix_stage
from strategies.base import Strategy

EMBEDDINGS = ("patch_embed", "cls_token", "reg_token", "pos_embed", "norm_pre")
PREFIX_MODULES = ("patch_embed", "pos_drop", "patch_drop", "norm_pre", "blocks")  # what `prefix_stage` runs


class TunedBackbone(Strategy):
    """Subclasses freeze or add backbone parameters in `__init__`; the head is added here. The features are the
    backbone's output, a function of its modules alone; the head reads them."""

    classifies_features = True
    feature_free = ("head",)

    def __init__(self, backbone: nn.Module, config, runtime) -> None:
        super().__init__(backbone, config, runtime)
        self.head = GrowingClassifier(self.feature_dim, config.head_init).to(runtime.device)

    def train_task(self, task: Task) -> None:
        self.head.grow(task.num_outputs)
        set_train_modes(self)
        data, forward = self.training_data(task)
        loss = lambda x, y: self.task_loss(self.head(forward(x)), y, task)  # noqa: E731
        parameters = [p for p in self.parameters() if p.requires_grad]
        fit(loss, parameters, data, self.config, self.runtime, desc=f"{type(self).__name__} {task.name}")

    def task_loss(self, logits: torch.Tensor, labels: torch.Tensor, task: Task) -> torch.Tensor:
        """The loss of one batch: cross-entropy over the task's output units (`loss: local`) or every unit seen
        (`global`). Override to add a term (a penalty on the parameters, a distillation loss)."""
        return task_cross_entropy(logits, labels, task, self.config.loss)

    def training_data(self, task: Task) -> tuple[Dataset, Stage]:
        """The task's training data and the map from its items to features, skipping work on the frozen prefix."""
        if not any(p.requires_grad for p in self.backbone.parameters()):
            return frozen_prefix_data(self.features, task, self.runtime, key=self.feature_key())
        cut = frozen_blocks(self.backbone)
        if cut == 0:
            return training_data(task, self.runtime), self.features
        data, prefix = frozen_prefix_data(prefix_stage(self.backbone, cut), task, self.runtime)
        suffix = suffix_stage(self.backbone, cut)
        return data, lambda x: suffix(prefix(x))

    def predict(self, x: torch.Tensor, task_id: Optional[int] = None) -> torch.Tensor:
        return self.classify(self.features(x))

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features)

    def feature_identity(self) -> str:
        return ""

    def frozen_stage(self) -> Optional[tuple[Stage, str, Stage]]:
        """The frozen embeddings and leading blocks when a later block trains (top-k, block expansion)."""
        cut = frozen_blocks(self.backbone)
        if cut == 0 or cut == len(self.backbone.blocks):
            return None
        after = [name for name, _ in self.backbone.named_children() if name not in PREFIX_MODULES]
        after += [f"blocks.{index}" for index in range(cut, len(self.backbone.blocks))]
        key = module_fingerprint(self.backbone, f"prefix:{cut}", skip=after)
        return prefix_stage(self.backbone, cut), key, suffix_stage(self.backbone, cut)


def frozen_blocks(model: nn.Module) -> int:
    """How many leading blocks (after frozen embeddings) have no trainable parameter; 0 if an embedding trains."""
    embeddings = [getattr(model, name) for name in EMBEDDINGS if getattr(model, name, None) is not None]
    if any(p.requires_grad for e in embeddings for p in (e.parameters() if isinstance(e, nn.Module) else [e])):
        return 0
    for index, block in enumerate(model.blocks):
        if any(p.requires_grad for p in block.parameters()):
            return index
    return len(model.blocks)


def set_train_modes(model: nn.Module) -> None:
    """Train mode exactly for the modules that hold a trainable parameter (directly or below)."""
    for module in model.modules():
        module.training = any(p.requires_grad for p in module.parameters())
