"""L2P: Learning to Prompt for Continual Learning (Wang, Zhang, Lee, Zhang, Sun, Ren, Su, Perot, Dy, Pfister; CVPR
2022; arXiv 2112.08654), after LAMDA-PILOT (`models/l2p.py`, `backbone/vit_l2p.py`, `backbone/prompt.py`,
`exps/l2p*.json`), itself a copy of JH-LEE-KR/l2p-pytorch, the PyTorch port of google-research/l2p.

The whole ViT is frozen. A pool of `pool_size` (10) prompts of `prompt_length` (5) tokens, each with a learnable key
(prompts and keys U(-1, 1)). For every image:
1. the query is the pre-logit [CLS] feature of a second, prompt-free pass through the frozen backbone;
2. the `top_n` (5) prompts whose keys are most cosine-similar to the query are selected and their tokens inserted
   after the class token (each with the class token's position embedding, as l2p-pytorch extends the table);
3. the head (one linear layer growing with the classes, timm's init) reads the mean of the prompt tokens' outputs
   after the final norm (`head_type: prompt`).
Loss: cross-entropy over the current task's classes (the reference's `train_mask`: logits of other classes set to
-inf, so they get no gradient) minus `pull` (0.1) x the sum over the batch and the selected keys of cos(query, key)
divided by the batch size (`reduce_sim`). Adam (weight decay 0) at a constant lr, rebuilt every task, trains the
whole pool, the keys and the head.

Selection (`selection`): `image` (default) selects per image; `batch` is the reference's `batchwise_prompt: true`,
which gives every image of a batch the prompts most often in its images' top n, in training and at test time, so a
prediction depends on the other images in its test batch. The result records the choice (`protocol`).

Task identification (`diagnostics' `task_selection_acc``): L2P's prompts belong to no task, so each prompt is assigned to
the task whose training selected it most often (counts kept per task, ties to the earliest); a test image counts as
identified when its first selected prompt (the most similar key, or the batch's most frequent prompt) belongs to
its own task. A pool that every task shares scores about 1 / tasks.

Presets (`preset:`, filling `epochs`, `batch_size`, `lr` and the recipe where not set): `reference` (CIFAR-100,
PILOT@2647455 exps/l2p.json: 5 epochs, batch 16, lr 0.001875 = 0.03 x 16 / 256), `reference-imagenet-r`
(exps/l2p_inr.json: 10 epochs, batch 32, same lr), `official` (CIFAR-100, the PyTorch port JH-LEE-KR/l2p-pytorch
@f7bc994 configs/cifar100_l2p.py: PILOT's settings plus gradient clipping at global norm 1.0, engine.py:78), all with
prompts of 5 tokens and top 5; `mini` (default: 3 epochs, batch 32, lr 0.01 for the mini streams' tens of steps per
task, prompts of 2 tokens and top 3, so 6 inserted tokens instead of 25 keep a run near a LoRA run's cost). The pool
(10) and pull 0.1 are the same in every preset. The `reference*` and `official` presets run the references' recipe
(benchmark/recipe.py): fp32; [0, 1] pixels without mean/std, RandomResizedCrop scale (0.05, 1) (bilinear), test
Resize(256, bicubic) + CenterCrop(224) (`input: unnormalised`; PILOT `utils/data.py:95-116`, the port's
`datasets.py:197-214`).

Deviations from the reference:
- `selection: image` is the default (the references select per batch; `selection: batch` restores it). With `batch`
  a test batch is the suite's evaluation batch (64 images on a CPU, 512 on a GPU) of the concatenated test sets,
  where the references vote over 16 images of one task (the port's per-task loaders) or of about one class (PILOT's
  class-sorted test set): the vote sees other images, and its numbers depend on the device.
- The `mini` preset keeps the suite's input pipeline and precision.
- Domain-incremental streams (not in the paper): every task has all classes, so nothing is masked.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch import nn

from benchmark.config import require
from benchmark.streams import Task
from strategies._heads import GrowingClassifier
from strategies._loop import fit, task_cross_entropy
from strategies._prompts import (PromptedViT, SelectingConfig, cosine, key_pull, protocol, query_training_data,
                                 select, uniform)
from strategies.base import Strategy, register

RECIPE = dict(input="unnormalised", precision="fp32")  # PILOT and l2p-pytorch `build_transform`; no autocast
PRESETS = {
    "mini": dict(epochs=3, batch_size=32, lr=0.01, schedule="constant", prompt_length=2, top_n=3),
    "reference": dict(epochs=5, batch_size=16, lr=0.001875, schedule="constant", prompt_length=5, top_n=5, **RECIPE),
    "reference-imagenet-r": dict(epochs=10, batch_size=32, lr=0.001875, schedule="constant", prompt_length=5,
                                 top_n=5, **RECIPE),
    # JH-LEE-KR/l2p-pytorch@f7bc994 configs/cifar100_l2p.py: as PILOT's, and clip_grad_norm_ 1.0 (engine.py:78)
    "official": dict(epochs=5, batch_size=16, lr=0.001875, schedule="constant", prompt_length=5, top_n=5,
                     grad_clip=1.0, **RECIPE),
}


@dataclass(frozen=True)
class L2PConfig(SelectingConfig):
    PRESETS = PRESETS

    pool_size: int = 10  # prompts in the pool (M)
    prompt_length: Optional[int] = None  # tokens per prompt (L_p; reference 5)
    top_n: Optional[int] = None  # prompts selected per image (N; reference 5)
    pull: float = 0.1  # coefficient of the key-pull term (pull_constraint_coeff; Mammoth's config: 0.5)

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.pool_size >= 1, "pool_size", ">= 1", self.pool_size)
        require(self.prompt_length >= 1, "prompt_length", ">= 1", self.prompt_length)
        require(1 <= self.top_n <= self.pool_size, "top_n", f"in [1, pool_size = {self.pool_size}]", self.top_n)
        require(self.pull >= 0, "pull", ">= 0", self.pull)


@register("l2p")
class L2P(Strategy):
    Config = L2PConfig
    shares_with = "prompt query"  # the frozen backbone's prompt-free query (PromptedViT.query)
    selects_task = True

    def __init__(self, backbone: nn.Module, config: L2PConfig, runtime) -> None:
        super().__init__(backbone, config, runtime)
        self.backbone.requires_grad_(False)
        self.prompted = PromptedViT(self.backbone, runtime=runtime)
        dim = self.feature_dim
        self.prompts = uniform(config.pool_size, config.prompt_length, dim, device=runtime.device)
        self.keys = uniform(config.pool_size, dim, device=runtime.device)
        self.head = GrowingClassifier(dim, config.head_init).to(runtime.device)
        # times each prompt was selected while each task trained: (tasks, pool); decides a prompt's task
        self.register_buffer("selections", torch.zeros(0, config.pool_size, dtype=torch.long, device=runtime.device))

    def selected(self, query: torch.Tensor) -> torch.Tensor:
        return select(cosine(query, self.keys), self.config.top_n, self.config.selection)

    def logits(self, images: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
        """The head on the mean output of the chosen prompts' tokens ((batch, n) indices into the pool)."""
        tokens = self.prompted.tokens(images, self.prompts[chosen].flatten(1, 2))
        inserted = chosen.shape[1] * self.config.prompt_length
        return self.head(self.backbone.fc_norm(tokens[:, 1: 1 + inserted].mean(dim=1)))

    def train_task(self, task: Task) -> None:
        self.head.grow(task.num_outputs)
        self.backbone.eval()
        data, unpack = query_training_data(self.prompted, task, self.runtime)
        counts = self.selections.new_zeros(self.config.pool_size)

        def loss(items: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
            images, query = unpack(items)
            chosen = self.selected(query)
            counts.add_(torch.bincount(chosen.flatten(), minlength=len(counts)))
            pulled = key_pull(query, self.keys, chosen)
            return task_cross_entropy(self.logits(images, chosen), labels, task, "local") - self.config.pull * pulled

        fit(loss, [self.prompts, self.keys, *self.head.parameters()], data, self.config.train_config(),
            self.runtime, desc=f"L2P {task.name}")
        self.selections = torch.cat([self.selections, counts.unsqueeze(0)])

    def predict(self, x: torch.Tensor, task_id: Optional[int] = None) -> torch.Tensor:
        return self.logits(x, self.selected(self.prompted.query(x)))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The prompted network's own pre-logits ([CLS]), which the pre-training head reads; before the first task
        the network has no prompt yet."""
        if len(self.selections) == 0:
            return self.backbone(x)
        chosen = self.selected(self.prompted.query(x))
        return self.prompted.pre_logits(self.prompted.tokens(x, self.prompts[chosen].flatten(1, 2)))

    def selected_task(self, x: torch.Tensor) -> torch.Tensor:
        owner = self.selections.argmax(dim=0)  # each prompt's task: the first of those that selected it most
        return owner[self.selected(self.prompted.query(x))[:, 0]]

    def report(self) -> dict[str, Any]:
        return {"protocol": protocol(self.config.selection, head="mean of the prompt tokens' outputs"),
                "prompt_selections": self.selections.tolist()}
