"""CODA-Prompt: COntinual Decomposed Attention-based Prompting (Smith, Karlinsky, Gutta, Cascante-Bonilla, Kim,
Arbelle, Panda, Feris, Kira; CVPR 2023; arXiv 2211.13218), after the official code (GT-RIPL/CODA-Prompt:
`models/zoo.py` `CodaPrompt`, `learners/prompt.py`, `configs/*_prompt.yaml`) and LAMDA-PILOT's copy
(`backbone/prompt.py` `CodaPrompt` with its Gram-Schmidt re-initialisation, `exps/coda_prompt*.json`).

The whole ViT is frozen. In each of `blocks` (0-4), prompt components P_m (`prompt_length` 8 tokens: the first half
prefix keys, the second half prefix values, `strategies/_prompts.py`), each with a key K_m and an attention vector
A_m (both of the feature dimension). For an image with query q (the pre-logit [CLS] of a prompt-free pass through
the frozen backbone), block by block:
    alpha_m = cos(q * A_m, K_m)      (element-wise product, then cosine similarity)
    prompt  = sum_m alpha_m P_m      (keys = its first length / 2 tokens, values = the rest).
Each task adds `components_per_task` (the reference's pool 100 / number of tasks: 10 for 10 tasks) components,
keys and attention vectors in every block, initialised by Gram-Schmidt against all earlier ones (the reference's
`gram_schmidt`: a standard-normal draw minus its projections on every earlier vector, then unit norm; P flattened
over its tokens); only the new ones train, the old ones are frozen (stored as buffers, so bit-identical) and still
take part in the weighted sum. The head (one linear layer growing with the classes) reads the [CLS] output;
cross-entropy over the current task's classes (the reference sets the old classes' logits to -inf). Adam (no
weight decay) with a cosine schedule, rebuilt every task, trains the new components and the head.

Task identification (`diagnostics' `task_selection_acc``), a diagnostic (CODA-Prompt selects nothing): an image is assigned
to the task whose components get the largest sum of alpha, averaged over the blocks.

Presets (`preset:`, filling the fields left null): `reference` (CIFAR-100, PILOT's exps/coda_prompt.json and the
official configs/cifar-100_prompt.yaml: 20 epochs, batch 128, lr 0.001), `reference-imagenet-r` (50 epochs), `mini`
(default: 3 epochs, batch 32, lr 0.01, per-step cosine, for the mini streams' tens of steps per task).
`components_per_task` 10 fits the 10-task splits; set 100 / tasks otherwise (5 for PILOT's 20-task CIFAR-100). The
`reference*` presets run the reference's recipe (GT-RIPL/CODA-Prompt@6417d4f; benchmark/recipe.py): fp32; [0, 1]
pixels (`Normalize(0, 1)`, `dataloaders/utils.py:34-35`), torchvision's RandomResizedCrop (scale (0.08, 1),
bilinear), test Resize(224) on CIFAR-100 (`input: unnormalised-bilinear-resize224`) and Resize(256) + CenterCrop(224)
on ImageNet-R (`input: unnormalised-bilinear`), bilinear; GT-RIPL's `CosineSchedule` per epoch (`schedule:
coda-cosine`, `utils/schedulers.py`, `learners/default.py:92-95`); the head as nn.Linear initialises it (`head_init:
linear`); each epoch's last partial batch dropped (`drop_last`, `trainer.py:185`).

Deviations from the reference:
- Components are added task by task (old ones as buffers) instead of a pool of 100 allocated up front and sliced:
  the same function, without knowing the number of tasks in advance.
- The orthogonality penalty is not implemented (weight 0 in every reference config).
- Gram-Schmidt does not redraw a vector whose earlier vector has (near) zero norm (the reference's `redo`; trained
  components never have).
- The `mini` preset keeps the suite's input pipeline, precision, per-step schedule and timm's head init.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn

from benchmark.config import require
from benchmark.streams import Task
from strategies._heads import GrowingClassifier
from strategies._loop import fit, task_cross_entropy
from strategies._prompts import Prefix, PromptConfig, PromptedViT, existing_blocks, protocol, query_training_data
from strategies.base import Strategy, register

# GT-RIPL/CODA-Prompt@6417d4f and PILOT's copy: CosineSchedule per epoch, nn.Linear's head, drop_last, fp32
RECIPE = dict(schedule="coda-cosine", head_init="linear", drop_last=True, precision="fp32")
PRESETS = {
    "mini": dict(epochs=3, batch_size=32, lr=0.01, schedule="cosine"),
    "reference": dict(epochs=20, batch_size=128, lr=0.001, input="unnormalised-bilinear-resize224", **RECIPE),
    "reference-imagenet-r": dict(epochs=50, batch_size=128, lr=0.001, input="unnormalised-bilinear", **RECIPE),
}


@dataclass(frozen=True)
class CODAPromptConfig(PromptConfig):
    PRESETS = PRESETS

    blocks: tuple[int, ...] = (0, 1, 2, 3, 4)  # blocks with a prefix; indices past the backbone's depth drop
    prompt_length: int = 8  # tokens per component: half prefix keys, half prefix values
    components_per_task: int = 10  # new components per task and block (the reference's 100 / tasks)

    def __post_init__(self) -> None:
        super().__post_init__()
        require(len(self.blocks) >= 1 and min(self.blocks) >= 0 and len(set(self.blocks)) == len(self.blocks),
                "blocks", "distinct block indices >= 0", list(self.blocks))
        require(self.prompt_length >= 2 and self.prompt_length % 2 == 0, "prompt_length", "even and >= 2",
                self.prompt_length)
        require(self.components_per_task >= 1, "components_per_task", ">= 1", self.components_per_task)


def gram_schmidt(old: torch.Tensor, new: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """`new` unit vectors, each a standard-normal draw minus its projections (v.u / u.u) u on every row of `old` and
    on the new vectors before it (the reference's `gram_schmidt`); (n, ...) rows are flattened."""
    shape = old.shape[1:]
    basis = list(old.detach().flatten(1).double())
    drawn = []
    for _ in range(new):
        v = torch.randn(shape.numel(), generator=generator, dtype=torch.float64)
        u = v - sum(((v @ b) / (b @ b)) * b for b in basis if float(b @ b) >= 1e-8)
        basis.append(u)
        drawn.append(u / u.norm())
    return torch.stack(drawn).reshape(new, *shape).to(old.dtype)


def component_weights(query: torch.Tensor, keys: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
    """alpha_m = cos(q * A_m, K_m): (batch, dim) query, (m, dim) keys and attention vectors -> (batch, m)."""
    attended = F.normalize(query.float().unsqueeze(1) * attention.float(), dim=2)
    return torch.einsum("bmd,md->bm", attended, F.normalize(keys.float(), dim=1))


@register("coda_prompt")
class CODAPrompt(Strategy):
    Config = CODAPromptConfig
    shares_with = "prompt query"  # the frozen backbone's prompt-free query (PromptedViT.query)
    selects_task = True

    def __init__(self, backbone: nn.Module, config: CODAPromptConfig, runtime) -> None:
        super().__init__(backbone, config, runtime)
        self.backbone.requires_grad_(False)
        self.blocks = existing_blocks(config.blocks, len(self.backbone.blocks), "strategies.coda_prompt.blocks")
        self.prompted = PromptedViT(self.backbone, self.blocks, runtime=runtime)
        attn_dim, dim, n = self.backbone.blocks[0].attn.qkv.out_features // 3, self.feature_dim, len(self.blocks)
        device = runtime.device
        # [block, component, token, attn_dim] prompts; [block, component, dim] keys and attention vectors
        for name, shape in (("prompts", (config.prompt_length, attn_dim)), ("keys", (dim,)), ("attention", (dim,))):
            self.register_buffer(f"old_{name}", torch.zeros(n, 0, *shape, device=device))  # earlier tasks', frozen
            setattr(self, name, nn.Parameter(torch.zeros(n, 0, *shape, device=device)))  # the current task's
        self.head = GrowingClassifier(dim, config.head_init).to(device)

    @property
    def components(self) -> int:
        return self.old_keys.shape[1] + self.keys.shape[1]

    def weights(self, query: torch.Tensor) -> torch.Tensor:
        """alpha: (blocks, batch, components) over every component so far."""
        keys, attention = torch.cat([self.old_keys, self.keys], 1), torch.cat([self.old_attention, self.attention], 1)
        return torch.stack([component_weights(query, k, a) for k, a in zip(keys, attention)])

    def prefixes(self, query: torch.Tensor) -> dict[int, Prefix]:
        prompts = torch.cat([self.old_prompts, self.prompts], 1)
        mixed = torch.einsum("nbm,nmld->nbld", self.weights(query), prompts.float())  # (blocks, batch, length, dim)
        half = self.config.prompt_length // 2
        return {block: (mixed[i, :, :half], mixed[i, :, half:]) for i, block in enumerate(self.blocks)}

    def logits(self, images: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        return self.head(self.prompted.pre_logits(self.prompted.tokens(images, prefixes=self.prefixes(query))))

    def training_bytes(self) -> int:
        """One task's components: per prompted block, prompts (length x attention width), a key and an attention
        vector each, in float32."""
        attn_dim = self.backbone.blocks[0].attn.qkv.out_features // 3
        per_component = self.config.prompt_length * attn_dim + 2 * self.feature_dim
        return 4 * len(self.blocks) * self.config.components_per_task * per_component

    def train_task(self, task: Task) -> None:
        self.head.grow(task.num_outputs)
        self.add_components()
        self.backbone.eval()
        data, unpack = query_training_data(self.prompted, task, self.runtime)

        def loss(items: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
            return task_cross_entropy(self.logits(*unpack(items)), labels, task, "local")

        fit(loss, [self.prompts, self.keys, self.attention, *self.head.parameters()], data,
            self.config.train_config(), self.runtime, desc=f"CODA-Prompt {task.name}")

    @torch.no_grad()
    def add_components(self) -> None:
        """Freeze the current task's components (they join the old ones) and start a new, orthogonal set."""
        for name in ("prompts", "keys", "attention"):
            old = torch.cat([getattr(self, f"old_{name}"), getattr(self, name)], 1)
            setattr(self, f"old_{name}", old)
            new = torch.stack([gram_schmidt(layer.cpu(), self.config.components_per_task) for layer in old])
            setattr(self, name, nn.Parameter(new.to(old.device)))

    def predict(self, x: torch.Tensor, task_id: Optional[int] = None) -> torch.Tensor:
        return self.logits(x, self.prompted.query(x))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The prompted network's pre-logits; before the first task the network has no prompt yet."""
        if self.components == 0:
            return self.backbone(x)
        return self.prompted.pre_logits(self.prompted.tokens(x, prefixes=self.prefixes(self.prompted.query(x))))

    def selected_task(self, x: torch.Tensor) -> torch.Tensor:
        alpha = self.weights(self.prompted.query(x)).mean(dim=0)  # (batch, components)
        return alpha.reshape(len(x), -1, self.config.components_per_task).sum(dim=2).argmax(dim=1)

    def report(self) -> dict[str, Any]:
        return {"protocol": protocol(None, head="[CLS] output", components=self.components)}
