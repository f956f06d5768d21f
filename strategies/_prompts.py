"""Prompts for a frozen timm VisionTransformer, shared by L2P, DualPrompt and CODA-Prompt.

Two kinds of prompt, as the three reference codes use them (LAMDA-PILOT `backbone/vit_l2p.py`, `vit_dualprompt.py`,
`vision_transformer_coda_prompt.py`; GT-RIPL/CODA-Prompt `models/vit.py`):
- prompt tokens (`PromptedViT.tokens(..., prompts=)`): learnable tokens inserted after the class token once the
  position embeddings are added; each gets the class token's position embedding, as l2p-pytorch's
  `resize_pos_embed` extends the pre-trained table for them (order: class token, prompts, patches);
- prefix keys and values (`prefixes=`, block index -> (keys, values)): learnable tokens concatenated in front of a
  block's attention keys and values after the qkv projection, so every token also attends to them; nothing is
  added to the sequence. The attention weights are the plain softmax over prefix and sequence (no compensation,
  unlike LAE's prefix). The block's key norm (identity in ViT-B/16) is applied to the prefix keys too.

The backbone keeps its modules and parameter names (checkpoints skip it, as they skip LAE's hooked backbone): the
attention of every block that can take a prefix runs `PromptedViT._attend` instead of its own forward, which falls
back to timm's forward when no prefix is active, so `backbone(x)` stays the pre-trained network exactly. Prefixes
are active only inside `tokens`; attention is computed by `scaled_dot_product_attention`, whose FLOPs (the prefix
positions included) FlopCounterMode counts under the math kernel.

The query of all three methods is the [CLS] pre-logit feature of a second, prompt-free pass through the frozen
backbone (`PromptedViT.query`); for training data without random augmentation it is computed once per task
(`query_training_data`, through `strategies._loop.frozen_prefix_data`), not every epoch, and every query pass is
shared with earlier passes of the same backbone on the same batch (`benchmark.sharing.shared_pass`), so an
evaluation's logits, retention features and task selection run it once, later evaluations not at all.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Callable, ClassVar, Iterator, Mapping, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from benchmark.config import apply_preset, require
from benchmark.recipe import RecipeConfig
from benchmark.errors import ConfigError
from benchmark.runtime import Runtime
from benchmark.sharing import shared_pass
from benchmark.streams import Task
from strategies._loop import TrainConfig, frozen_prefix_data

Prefix = tuple[torch.Tensor, torch.Tensor]  # keys, values: (length, attn_dim) or (batch, length, attn_dim)
SELECTIONS = ("image", "batch")


class PromptedViT:
    """A frozen timm VisionTransformer run with prompt tokens and prefix keys/values (held by reference: the strategy
    owns the backbone)."""

    def __init__(self, model: nn.Module, prefix_blocks: Sequence[int] = (), runtime: Optional[Runtime] = None) -> None:
        for name in ("patch_embed", "_pos_embed", "blocks", "norm", "forward_head"):
            if not hasattr(model, name):
                raise ConfigError(f"prompts need a timm VisionTransformer backbone (it has no `{name}`)")
        self.model = model
        self.runtime = runtime  # given: queries are shared between equal passes (benchmark.sharing.shared_pass)
        self._active: Mapping[int, Prefix] = {}
        for index in prefix_blocks:
            attention = model.blocks[index].attn
            if getattr(attention, "gate", None) is not None or not hasattr(attention, "qkv"):
                raise ConfigError("prefix prompts need timm's plain Attention (fused qkv, no gate)")
            attention.forward = partial(self._attend, index, attention, attention.forward)

    @property
    def depth(self) -> int:
        return len(self.model.blocks)

    @torch.no_grad()
    def query(self, images: torch.Tensor) -> torch.Tensor:
        """The prompt-free, gradient-free pre-logit feature ([CLS] after the final norm for ViT-B/16 and vit-mini).

        It depends on the frozen backbone and the images alone, so with a runtime it is shared between every pass on
        the same batch (the logits, retention features and task selection of one evaluation, later evaluations, the
        other prompt methods' runs in this process): the prompt-free pass equals the unmodified backbone's, and the
        backbone's fingerprint decides it."""
        if self.runtime is None:
            return self.model(images)
        return shared_pass(self.model, "prompt-free pre-logits", self.model, images, self.runtime.share,
                           self.runtime.context)

    def tokens(self, images: torch.Tensor, prompts: Optional[torch.Tensor] = None,
               prefixes: Mapping[int, Prefix] = {}) -> torch.Tensor:
        """Tokens after the final norm with `prompts` (batch, n, dim) inserted after the class token and `prefixes`
        in their blocks: (batch, 1 + n + patches, dim)."""
        model = self.model
        x = model.patch_drop(model._pos_embed(model.patch_embed(images)))
        if prompts is not None:
            x = self._insert(x, prompts)
        x = model.norm_pre(x)
        with self._prefixed(prefixes):
            x = model.blocks(x)
        return model.norm(x)

    def pre_logits(self, tokens: torch.Tensor) -> torch.Tensor:
        """The backbone's own pooling of `tokens` ([CLS] for token pooling): what its original head would read."""
        return self.model.forward_head(tokens, pre_logits=True)

    def _insert(self, x: torch.Tensor, prompts: torch.Tensor) -> torch.Tensor:
        model = self.model
        prefix_tokens = getattr(model, "num_prefix_tokens", 1)
        prompts = prompts.to(x.dtype)
        if getattr(model, "cls_token", None) is not None and not getattr(model, "no_embed_class", False):
            prompts = prompts + model.pos_embed[:, :1].to(x.dtype)  # the class token's position embedding
        return torch.cat([x[:, :prefix_tokens], prompts, x[:, prefix_tokens:]], dim=1)

    @contextmanager
    def _prefixed(self, prefixes: Mapping[int, Prefix]) -> Iterator[None]:
        self._active = prefixes
        try:
            yield
        finally:
            self._active = {}

    def _attend(self, index: int, attention: nn.Module, original: Callable[..., torch.Tensor], x: torch.Tensor,
                attn_mask: Optional[torch.Tensor] = None, is_causal: bool = False) -> torch.Tensor:
        """timm's `Attention.forward` with the active prefix of block `index` in front of its keys and values."""
        prefix = self._active.get(index)
        if prefix is None:
            return original(x, attn_mask=attn_mask, is_causal=is_causal)
        if attn_mask is not None or is_causal:
            raise NotImplementedError("prefix prompts support no attention mask")
        batch, length, _ = x.shape
        heads, head_dim = attention.num_heads, attention.head_dim
        q, k, v = attention.qkv(x).reshape(batch, length, 3, heads, head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        keys, values = (_heads(p.to(k.dtype), batch, heads, head_dim) for p in prefix)
        q, k = attention.q_norm(q), attention.k_norm(torch.cat([keys, k], dim=2))
        v = torch.cat([values, v], dim=2)
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=attention.attn_drop.p if attention.training else 0.0)
        out = attention.norm(out.transpose(1, 2).reshape(batch, length, heads * head_dim))
        return attention.proj_drop(attention.proj(out))


def _heads(prefix: torch.Tensor, batch: int, heads: int, head_dim: int) -> torch.Tensor:
    """(length, attn_dim) or (batch, length, attn_dim) -> (batch, heads, length, head_dim)."""
    prefix = prefix.expand(batch, -1, -1) if prefix.dim() == 2 else prefix
    return prefix.reshape(batch, prefix.shape[1], heads, head_dim).transpose(1, 2)


def existing_blocks(blocks: Sequence[int], depth: int, field: str) -> tuple[int, ...]:
    """The configured block indices that the backbone has (as LAE's `adapt_blocks`); none at all is an error."""
    kept = tuple(i for i in blocks if i < depth)
    if blocks and not kept:
        raise ConfigError(f"{field}: {list(blocks)} names no block of a {depth}-block backbone")
    return kept


def cosine(query: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """(batch, dim) x (pool, dim) -> (batch, pool) cosine similarities (the references' l2-normalised product)."""
    return F.normalize(query.float(), dim=-1) @ F.normalize(keys.float(), dim=-1).T


def select(similarity: torch.Tensor, n: int, mode: str) -> torch.Tensor:
    """(batch, n) indices of the selected pool entries. "image": each image's n most similar keys. "batch" (the
    references' `batchwise_prompt`): the n entries most often among the images' top n over the whole batch, for
    every image of it, so that a prediction depends on the other images in its batch. Counted as the references
    count (l2p-pytorch `prompt.py:71-82`, LAMDA-PILOT `backbone/prompt.py:448-458`): the distinct selected ids in
    ascending order with their counts, padded to the pool's size with the smallest id at count 0, then `topk` of the
    counts, so that ties fall the way they fall there on the same device."""
    top = similarity.topk(n, dim=1).indices
    if mode == "image":
        return top
    ids, counts = torch.unique(top, return_counts=True, sorted=True)
    missing = similarity.shape[1] - len(ids)
    if missing > 0:
        ids = torch.cat([ids, ids.min().expand(missing)])
        counts = torch.cat([counts, counts.new_zeros(missing)])
    return ids[counts.topk(n).indices].expand(len(similarity), -1)


def key_pull(query: torch.Tensor, keys: torch.Tensor, selected: torch.Tensor) -> torch.Tensor:
    """The references' `reduce_sim`: sum over the batch and the selected keys of cos(query, key), divided by the
    batch size. The loss subtracts coefficient x this (the same gradient as coefficient x mean sum (1 - cos))."""
    normed_keys = F.normalize(keys.float(), dim=-1)[selected]  # (batch, n, dim)
    return (normed_keys * F.normalize(query.float(), dim=-1).unsqueeze(1)).sum() / len(query)


Unpack = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]  # packed items -> (images, queries)


def query_training_data(prompted: PromptedViT, task: Task, runtime: Runtime) -> tuple[Dataset, Unpack]:
    """The task's training data and the map from its items to (images, queries).

    Images and their queries travel packed in one tensor (flattened image, then query), so that the shared loop's
    (inputs, labels) batches carry both: without augmentation the packed items are computed once per task
    (`frozen_prefix_data`), so the query pass runs once per image and task instead of once per epoch."""
    image_shape = task.train[0][0].shape
    size = math.prod(image_shape)

    def pack(images: torch.Tensor) -> torch.Tensor:
        return torch.cat([images.flatten(1), prompted.query(images).to(images.dtype)], dim=1)

    data, forward = frozen_prefix_data(pack, task, runtime)

    def unpack(items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        packed = forward(items)
        return packed[:, :size].reshape(-1, *image_shape), packed[:, size:]

    return data, unpack


def uniform(*shape: int, device: torch.device) -> nn.Parameter:
    """A parameter drawn from U(-1, 1) (on the CPU generator, so a run draws the same on any device): the
    references' `prompt_init` / `prompt_key_init` "uniform"."""
    return nn.Parameter(torch.empty(shape).uniform_(-1.0, 1.0).to(device))


@dataclass(frozen=True)
class PromptConfig(RecipeConfig):
    """The training hyper-parameters the three methods share; each preset fills those left null. The optimiser is
    Adam without weight decay in every reference (run as AdamW with weight decay 0: the same update)."""

    PRESETS: ClassVar[Mapping[str, Mapping[str, object]]] = {}

    preset: str = "mini"  # fills the fields left null: mini, reference (CIFAR-100), reference-imagenet-r
    epochs: Optional[int] = None  # per task
    batch_size: Optional[int] = None
    lr: Optional[float] = None
    schedule: Optional[str] = None  # constant (L2P, DualPrompt), cosine or coda-cosine (CODA-Prompt): _loop.SCHEDULES
    grad_clip: Optional[float] = None  # clip the gradients' global norm to this (the l2p/dualprompt ports: 1.0)
    head_init: Optional[str] = None  # new head rows (_heads.HEAD_INITS); default trunc_normal (timm's)
    drop_last: Optional[bool] = None  # drop each epoch's partial last batch (CODA-Prompt); default false

    def __post_init__(self) -> None:
        apply_preset(self, self.PRESETS)
        for key, default in (("head_init", "trunc_normal"), ("drop_last", False)):
            if getattr(self, key) is None:
                object.__setattr__(self, key, default)
        self.resolve_recipe()
        require(self.epochs >= 1, "epochs", ">= 1", self.epochs)
        require(self.batch_size >= 1, "batch_size", ">= 1", self.batch_size)
        require(self.lr > 0, "lr", "> 0", self.lr)

    def train_config(self) -> TrainConfig:
        """What the shared loop needs (it validates the schedule)."""
        return TrainConfig(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, optimizer="adamw",
                           weight_decay=0.0, schedule=self.schedule, grad_clip=self.grad_clip,
                           drop_last=self.drop_last, head_init=self.head_init, loss="local")


@dataclass(frozen=True)
class SelectingConfig(PromptConfig):
    """The methods that select prompts from a pool by key (L2P, DualPrompt)."""

    selection: str = "image"  # image: each image picks its own prompts; batch: the batch's majority (the references)

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.selection in SELECTIONS, "selection", f"one of {', '.join(SELECTIONS)}", self.selection)


def protocol(selection: Optional[str], **extra: object) -> dict[str, object]:
    """The protocol choices that decide whether a prompt method's numbers are comparable, for the result."""
    return {"prompt_selection": selection or "none (weighted sum of all components)",
            "masked_logits": "outside the current task (cross-entropy over the task's classes)",
            "replay_memory": "none",
            "query": "frozen backbone, no prompt, pre-logit [CLS] feature", **extra}
