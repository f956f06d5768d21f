"""LAE: Learning, Accumulation, Ensemble (Gao, Zhao, Sun, Xi, Zhang, Ghanem, Zhang; "A Unified Continual Learning
Framework with General Parameter-Efficient Tuning", ICCV 2023; arXiv 2303.10070), after the official code
(gqk/LAE@1680e49: main.py, libml/model/pet/*.py, config/*.yaml).

The backbone is frozen. Parameter-efficient tuning modules (PETs), one kind per run, sit in the first blocks
(`adapt_blocks`, blocks 0-4; fewer when the backbone has fewer):
- `adapter`: Linear(d -> 5) -> GELU -> Linear(5 -> d) -> learnable scale (init 1), in parallel with the attention:
  attn(LN1(x)) + adapter(LN1(x)). Down projection Kaiming-uniform, up projection zero (`strategies._adapter.Adapter`,
  shared with APER and RanPAC).
- `lora`: rank-5 updates of the key and value parts of the fused qkv projection, qkv(x) + [0; s_k B_k A_k x;
  s_v B_v A_v x], learnable scales s (init 1), no alpha / r. A Kaiming-uniform (a = sqrt 5), B zero.
- `prefix`: 10 learnable key and 10 value tokens (U(0, 0.01), each set with a learnable scale) inserted after the
  class token, with the reference's compensation: the attention weights on the prefix positions are renormalised to
  sum to 1 (pet/prefix.py `compensate`).

Each task, in `train_task` (one linear head per task, N(0, 0.001) init, bias 0, logits concatenated):
1. Learning: Adam (constant lr, no weight decay), rebuilt every task, trains the new head and the online PETs with
   cross-entropy over the current task's logits (batches of `batch_size`, the last partial batch dropped). From the
   second task on, the PETs are frozen for the first `freeze_ratio` of the epochs, so only the new head trains (the
   reference's calibration of adaptation speed). The online PETs carry over from task to task.
2. Accumulation: offline PETs, created as a copy of the online ones when the second task starts, follow them by an
   exponential moving average after every optimizer step of the second and later tasks, warm-up epochs included:
   offline <- decay * offline + (1 - decay) * online, decay 0.9999 (the formula of timm's ModelEmaV2, which the
   reference uses).
3. Ensemble: `predict` runs the network with the online and with the offline PETs (the same heads) and returns the
   class-wise maximum of the two softmax outputs (probabilities, whose argmax is the prediction). After the first
   task only the online expert exists. Each image costs two forward passes, which the FLOP count includes.

The offline PETs are buffers (stored and checkpointed, never trained: they count in `params_added`, not in
`params_trainable`); the offline pass runs the same modules with those tensors (`torch.func.functional_call`).
Online PETs, heads, offline PETs and the number of tasks trained are all in the state dict, so a resumed run behaves
as an uninterrupted one. `features` are the online expert's.

Presets (`preset:`, filling `epochs`, `batch_size`, `lr`, `ema_decay` where not set): `reference` (ViT-B/16 on
CIFAR-100: 5 epochs, batch 24, lr 0.0028125 = 0.03 * 24 / 256, decay 0.9999), `reference-imagenet-r` (50 epochs,
batch 24, lr 0.00046875 = 0.005 * 24 / 256, decay 0.9999) and `mini` (default: the CIFAR-100 settings with 3 epochs,
and decay 0.997, so that the offline PETs move the same ~10% towards the online ones per task as the reference's
0.9999 does over CIFAR-100's ~1,040 steps per task, mini-split-digits having ~33). Every preset freezes the PETs for
60% of the epochs of later tasks (3 of 5, 30 of 50: `freeze_ratio` 0.6; 2 of 3 in `mini`).

Deviations from the reference:
- Inputs carry the backbone's own normalisation (the stream's preprocessing); the reference feeds unnormalised
  [0, 1] pixels, which suits the original ImageNet-21k ViT-B/16 .npz weights it loads.
- The PETs are attached with forward hooks (adapter: on the attention; LoRA: on qkv) and, for the prefix, by
  replacing the attention's forward; the backbone's own parameters and their names are untouched. The low-rank
  update is added to qkv's output (x A^T B^T) instead of merged into the weight: the same function.
- The prefix attention applies the backbone's q/k norms (identity in ViT-B/16) to the prefix keys too; it supports no
  attention mask (a ViT classifier passes none).
- Heads before the newest are frozen; the reference leaves them in Adam's parameter list, where the local loss gives
  them zero gradients and Adam therefore zero updates: the same training.
- Domain-incremental streams (not in the paper): a task that brings no new class adds no head; the one head trains on.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from functools import partial
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from benchmark.config import apply_preset, require
from benchmark.recipe import RecipeConfig
from benchmark.errors import ConfigError
from benchmark.streams import Task
from strategies._adapter import Adapter, AddedToOutput
from strategies._heads import TaskHeads
from strategies._loop import check_finite, run_epoch, shuffled_batches, task_cross_entropy, training_data
from strategies.base import Strategy, register

PRESETS = {
    "mini": dict(epochs=3, batch_size=24, lr=0.0028125, ema_decay=0.997),
    "reference": dict(epochs=5, batch_size=24, lr=0.0028125, ema_decay=0.9999),
    "reference-imagenet-r": dict(epochs=50, batch_size=24, lr=0.00046875, ema_decay=0.9999),
}


class KVLoRA(AddedToOutput):
    """Low-rank updates of the key and value rows of the fused qkv projection, each with a learnable scale
    (pet/lora.py `KVLoRA`)."""

    target = "attn.qkv"

    def __init__(self, dim: int, attn_dim: int, rank: int) -> None:
        super().__init__()
        self.A = nn.Parameter(torch.empty(2, rank, dim))  # [key, value]
        self.B = nn.Parameter(torch.zeros(2, attn_dim, rank))
        self.scale = nn.Parameter(torch.ones(2))
        for factor in self.A:
            nn.init.kaiming_uniform_(factor, a=math.sqrt(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The change of qkv(x): zero for the queries, s B A x for the keys and the values."""
        key, value = (s * F.linear(F.linear(x, a), b) for s, a, b in zip(self.scale, self.A, self.B))
        return torch.cat([torch.zeros_like(key), key, value], dim=-1)


class Prefix(nn.Module):
    """Learnable key and value tokens inserted after the class token, with the attention on them renormalised
    (pet/prefix.py, pet/prompt.py)."""

    def __init__(self, attn_dim: int, length: int) -> None:
        super().__init__()
        self.keys = nn.Parameter(torch.empty(length, attn_dim).uniform_(0, 0.01))
        self.values = nn.Parameter(torch.empty(length, attn_dim).uniform_(0, 0.01))
        self.scale = nn.Parameter(torch.ones(2))  # [keys, values]

    def attach(self, block: nn.Module) -> None:
        """The block's attention runs `attend` instead of its own forward (a prefix changes the attention inside)."""
        if getattr(block.attn, "gate", None) is not None:
            raise ConfigError("strategies.lae.pet: prefix needs timm's plain Attention (this one is gated)")
        block.attn.forward = partial(self.attend, block.attn)

    def attend(self, attention: nn.Module, x: torch.Tensor, attn_mask: Optional[torch.Tensor] = None,
               is_causal: bool = False) -> torch.Tensor:
        """timm's `Attention.forward` (explicit attention weights) with the prefix keys and values."""
        if attn_mask is not None or is_causal:
            raise NotImplementedError("LAE's prefix attention supports no attention mask")
        batch, tokens, _ = x.shape
        heads, head_dim = attention.num_heads, attention.head_dim
        q, k, v = attention.qkv(x).reshape(batch, tokens, 3, heads, head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        k, v = self.insert(k, self.scale[0] * self.keys), self.insert(v, self.scale[1] * self.values)
        q, k = attention.q_norm(q), attention.k_norm(k)
        weights = attention.attn_drop(((q * attention.scale) @ k.transpose(-2, -1)).softmax(dim=-1))
        out = (self.compensate(weights) @ v).transpose(1, 2).reshape(batch, tokens, heads * head_dim)
        return attention.proj_drop(attention.proj(attention.norm(out)))

    @staticmethod
    def insert(tokens: torch.Tensor, prefix: torch.Tensor) -> torch.Tensor:
        """(batch, heads, n, head_dim) tokens with the (length, heads * head_dim) prefix placed after the first."""
        batch, heads, _, head_dim = tokens.shape
        prefix = prefix.reshape(-1, heads, head_dim).transpose(0, 1).expand(batch, -1, -1, -1)
        return torch.cat([tokens[:, :, :1], prefix, tokens[:, :, 1:]], dim=2)

    def compensate(self, weights: torch.Tensor) -> torch.Tensor:
        """Attention weights with those on the prefix positions divided by their sum."""
        end = 1 + self.keys.shape[0]
        prefix = weights[..., 1:end]
        prefix = prefix / prefix.sum(dim=-1, keepdim=True).clamp(min=1e-12)
        return torch.cat([weights[..., :1], prefix, weights[..., end:]], dim=-1)


PET_KINDS = ("adapter", "lora", "prefix")


@dataclass(frozen=True)
class LAEConfig(RecipeConfig):
    preset: str = "mini"  # fills the fields left null: mini, reference (CIFAR-100), reference-imagenet-r
    pet: str = "adapter"  # adapter, lora or prefix
    epochs: Optional[int] = None  # per task
    batch_size: Optional[int] = None
    lr: Optional[float] = None  # Adam, constant
    adapt_blocks: tuple[int, ...] = (0, 1, 2, 3, 4)  # blocks that get a PET; indices past the backbone's depth drop
    adapter_hidden: int = 5  # the reference's down_sample: 5
    lora_rank: int = 5
    prefix_length: int = 10
    freeze_ratio: float = 0.6  # share of the epochs of every task but the first with frozen PETs (reference 3/5, 30/50)
    ema_decay: Optional[float] = None  # offline <- decay * offline + (1 - decay) * online, every optimizer step

    def __post_init__(self) -> None:
        apply_preset(self, PRESETS)
        self.resolve_recipe()
        require(self.pet in PET_KINDS, "pet", f"one of {', '.join(PET_KINDS)}", self.pet)
        require(self.epochs >= 1, "epochs", ">= 1", self.epochs)
        require(0 <= self.freeze_ratio <= 1, "freeze_ratio", "in [0, 1]", self.freeze_ratio)
        require(self.batch_size >= 1, "batch_size", ">= 1", self.batch_size)
        require(self.lr > 0, "lr", "> 0", self.lr)
        require(len(self.adapt_blocks) >= 1 and min(self.adapt_blocks) >= 0 and
                len(set(self.adapt_blocks)) == len(self.adapt_blocks),
                "adapt_blocks", "distinct block indices >= 0", list(self.adapt_blocks))
        require(self.adapter_hidden >= 1, "adapter_hidden", ">= 1", self.adapter_hidden)
        require(self.lora_rank >= 1, "lora_rank", ">= 1", self.lora_rank)
        require(self.prefix_length >= 1, "prefix_length", ">= 1", self.prefix_length)
        require(0 <= self.ema_decay < 1, "ema_decay", "in [0, 1)", self.ema_decay)

    @property
    def freeze_epochs(self) -> int:
        """Warm-up epochs with frozen PETs: freeze_ratio * epochs, rounded to the nearest epoch."""
        return round(self.freeze_ratio * self.epochs)


def make_pet(config: LAEConfig, block: nn.Module) -> nn.Module:
    """A fresh PET of the configured kind, sized for a timm ViT block."""
    qkv = block.attn.qkv
    if config.pet == "adapter":
        return Adapter(qkv.in_features, config.adapter_hidden)
    if config.pet == "lora":
        return KVLoRA(qkv.in_features, qkv.out_features // 3, config.lora_rank)
    return Prefix(qkv.out_features // 3, config.prefix_length)


def as_buffers(module: nn.Module) -> nn.Module:
    """A copy of `module` whose parameters are buffers of the same names: stored, never trained."""
    stored = copy.deepcopy(module)
    for submodule in stored.modules():
        for name, parameter in list(submodule.named_parameters(recurse=False)):
            delattr(submodule, name)
            submodule.register_buffer(name, parameter.detach())
    return stored


def max_softmax(*logits: torch.Tensor) -> torch.Tensor:
    """The class-wise maximum of the experts' softmax outputs."""
    return torch.stack([expert.softmax(dim=1) for expert in logits]).amax(dim=0)


@register("lae")
class LAE(Strategy):
    Config = LAEConfig

    def __init__(self, backbone: nn.Module, config: LAEConfig, runtime) -> None:
        super().__init__(backbone, config, runtime)
        self.backbone.requires_grad_(False)
        blocks = [self.backbone.blocks[i] for i in config.adapt_blocks if i < len(self.backbone.blocks)]
        if not blocks:
            raise ConfigError(f"strategies.lae.adapt_blocks: {list(config.adapt_blocks)} names no block of a "
                              f"{len(self.backbone.blocks)}-block backbone")
        self.online = nn.ModuleList(make_pet(config, block) for block in blocks).to(runtime.device)
        for pet, block in zip(self.online, blocks):
            pet.attach(block)
        self.offline = as_buffers(self.online)
        self.heads = TaskHeads(self.feature_dim, "normal_0.001").to(runtime.device)
        self.register_buffer("tasks_trained", torch.zeros((), dtype=torch.long, device=runtime.device))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits of the network with the PETs as they are (online, or offline within `offline_logits`)."""
        return self.heads(self.backbone(images))

    def train_task(self, task: Task) -> None:
        config = self.config
        self.heads.add(task.num_outputs)
        if task.index == 1:
            self.copy_online_to_offline()
        trainable = [p for p in self.heads.parameters() if p.requires_grad] + list(self.online.parameters())
        optimizer = torch.optim.Adam(trainable, lr=config.lr, weight_decay=0.0)
        batches = shuffled_batches(training_data(task, self.runtime), config.batch_size, self.runtime,
                                   drop_last=True)
        loss = lambda x, y: task_cross_entropy(self(x), y, task, "local")  # noqa: E731
        accumulate = self.accumulate if task.index >= 1 else None
        self.train()
        for epoch in self.runtime.bar(range(config.epochs), desc=f"LAE {task.name}"):
            self.online.requires_grad_(task.index == 0 or epoch >= config.freeze_epochs)
            check_finite(run_epoch(loss, batches, optimizer, self.runtime, after_step=accumulate), epoch,
                         epoch * len(batches))
        self.online.requires_grad_(True)
        self.tasks_trained += 1

    @torch.no_grad()
    def copy_online_to_offline(self) -> None:
        for name, offline in self.offline.named_buffers():
            offline.copy_(self.online.get_parameter(name))

    @torch.no_grad()
    def accumulate(self) -> None:
        """One EMA step of the offline PETs towards the online ones."""
        decay = self.config.ema_decay
        for name, offline in self.offline.named_buffers():
            offline.copy_(decay * offline + (1.0 - decay) * self.online.get_parameter(name))

    def offline_logits(self, images: torch.Tensor) -> torch.Tensor:
        """Logits of the network with the offline PETs' tensors in place of the online ones."""
        tensors = {f"online.{name}": tensor for name, tensor in self.offline.named_buffers()}
        return functional_call(self, tensors, (images,))

    def predict(self, x: torch.Tensor, task_id: Optional[int] = None) -> torch.Tensor:
        if int(self.tasks_trained) < 2:
            return self(x).softmax(dim=1)
        return max_softmax(self(x), self.offline_logits(x))
