"""VPT, visual prompt tuning (Jia, Tang, Chen, Cardie, Belongie, Hariharan, Lim; "Visual Prompt Tuning", ECCV 2022),
as RevisitingCIL@a2e6b71 `convs/vpt.py` (`VPT_ViT`; RanPAC@012927f `petl/vpt.py` is the same file) runs it on a
frozen timm ViT: a first-session module of APER and RanPAC (`strategies._first_session`).

- Shallow: `tokens` learnable prompts are appended after the patch tokens once the position embeddings are added
  (they get none), pass through every block with the sequence, and are dropped after the last block
  (`forward_features`, l. 122-130).
- Deep: block i gets its own `tokens` prompts appended to its input and drops whatever it made of them from its
  output, so the next block sees fresh prompts in their place (l. 109-120).
The final norm and the pooling see the image's tokens only: the head reads the class token (`forward`, l. 141).
Prompts start at zero (l. 49-52), so a fresh VPT network is not the pre-trained one (zero tokens still take part in
attention, through the norms' biases). ViT-B/16 with 5 tokens: 3,840 numbers (shallow), 12 x 3,840 = 46,080 (deep),
the "Trainable params" lines of RevisitingCIL's logs (logs/aper_vpt/cifar224/
exp_vpt-shallow_1993_pretrained_vit_b16_224_in21k_vpt.log:24, exp_vpt-deep_...:24).

Attached by hooks on the backbone's blocks (a pre-hook appends, a hook drops), so the backbone keeps its modules
and parameters; `bypass` leaves the prompts out, which is the pre-trained network exactly. Appending at the end or
inserting after the class token gives the same class token (attention is permutation-equivariant and no position
embedding is added to the prompts); the end is where the reference puts them.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from torch import nn

from strategies._first_session import FirstSessionConfig, FirstSessionModule, register_first_session


class VisualPrompts(FirstSessionModule):
    """`tokens` zero-initialised prompts at the input (shallow) or in every block (deep) of `backbone`."""

    def __init__(self, backbone: nn.Module, tokens: int, deep: bool) -> None:
        super().__init__()
        depth, dim = len(backbone.blocks), backbone.embed_dim
        self.prompts = nn.Parameter(torch.zeros(depth if deep else 1, tokens, dim))
        self.tokens, self.deep = tokens, deep
        self.bypass = False  # an instance setting from the start, so that fingerprints see it (benchmark.sharing)
        for index, block in enumerate(backbone.blocks):
            if deep or index == 0:
                block.register_forward_pre_hook(partial(self._append, index if deep else 0))
            if deep or index == depth - 1:
                block.register_forward_hook(self._drop)

    def switches(self) -> list[nn.Module]:
        return [self]

    def _append(self, index: int, block: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
        if self.bypass:
            return None
        x = args[0]
        prompts = self.prompts[index].to(x.dtype).expand(x.shape[0], -1, -1)
        return (torch.cat([x, prompts], dim=1), *args[1:])

    def _drop(self, block: nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> torch.Tensor:
        return output if self.bypass else output[:, :-self.tokens]


@register_first_session("vpt_shallow")
def shallow_prompts(backbone: nn.Module, config: FirstSessionConfig) -> VisualPrompts:
    return VisualPrompts(backbone, config.prompt_tokens, deep=False)


@register_first_session("vpt_deep")
def deep_prompts(backbone: nn.Module, config: FirstSessionConfig) -> VisualPrompts:
    return VisualPrompts(backbone, config.prompt_tokens, deep=True)
