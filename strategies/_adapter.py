"""Bottleneck adapters attached to the blocks of a timm ViT by forward hooks (the backbone's own modules and
parameter names stay as they are), shared by LAE and the first-session adaptation of APER and RanPAC.

An adapter is down-projection -> activation -> dropout -> up-projection -> scale; down Kaiming-uniform (a = sqrt 5),
up and both biases zero, so a fresh adapter adds exactly nothing (AdaptFormer's "lora" initialisation, LAE's too).
Two places in a block, both "parallel" adapters:
- `attn` (LAE, gqk/LAE pet/adapter.py): input LN1(x), output added to the attention's output:
  x + attn(LN1(x)) + adapter(LN1(x)).
- `mlp` (AdaptFormer, as LAMDA-PILOT's backbone/vit_adapter.py `ffn_option: parallel`): input the residual stream x
  entering the MLP sub-layer, output added to the MLP's output: x + mlp(LN2(x)) + adapter(x).
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Iterable, Iterator, Optional

import torch
import torch.nn.functional as F
from torch import nn

ACTIVATIONS = {"gelu": F.gelu, "relu": F.relu}
POSITIONS = ("attn", "mlp")


class AddedToOutput(nn.Module):
    """A module whose output, computed from the input of one module of the block (`target`), is added to that
    module's output. Attached with a forward hook; `bypass` turns it off (the block computes what it did before)."""

    target: str  # path of the module inside a timm ViT block

    def __init__(self) -> None:
        super().__init__()
        self.bypass = False  # an instance setting from the start, so that fingerprints see it (benchmark.sharing)

    def attach(self, block: nn.Module) -> None:
        block.get_submodule(self.target).register_forward_hook(self.add_to_output)

    def add_to_output(self, module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        return output if self.bypass else output + self(args[0])


class Adapter(AddedToOutput):
    """down -> activation -> dropout -> up -> * scale, in parallel with the attention (`position: attn`) or with the
    MLP (`position: mlp`). `scale` None: a learnable scalar starting at 1 (LAE); a number: fixed (AdaptFormer 0.1)."""

    def __init__(self, dim: int, hidden: int, *, position: str = "attn", activation: str = "gelu",
                 scale: Optional[float] = None, dropout: float = 0.0) -> None:
        super().__init__()
        if position not in POSITIONS or activation not in ACTIVATIONS:
            raise ValueError(f"adapter position {position!r} / activation {activation!r}: "
                             f"use one of {POSITIONS} / {tuple(ACTIVATIONS)}")
        self.position, self.activation, self.dropout = position, activation, dropout
        self.target = "attn" if position == "attn" else "mlp"
        self.down = nn.Linear(dim, hidden)
        self.up = nn.Linear(hidden, dim)
        self.fixed_scale = scale
        if scale is None:
            self.scale = nn.Parameter(torch.tensor(1.0))
        nn.init.kaiming_uniform_(self.down.weight, a=math.sqrt(5))
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)
        self._pending: Optional[torch.Tensor] = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = F.dropout(ACTIVATIONS[self.activation](self.down(x)), self.dropout, self.training)
        scale = self.scale if self.fixed_scale is None else self.fixed_scale
        return scale * self.up(hidden)

    def attach(self, block: nn.Module) -> None:
        """`attn`: one hook on the attention. `mlp`: the MLP sees LN2(x), not x, so a hook on `norm2` computes the
        adapter's output from x and the hook on `mlp` adds it (timm's Block runs norm2 right before mlp)."""
        if self.position == "attn":
            super().attach(block)
            return
        block.norm2.register_forward_hook(self._from_mlp_input)
        block.mlp.register_forward_hook(self._add_pending)

    def _from_mlp_input(self, module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        self._pending = None if self.bypass else self(args[0])

    def _add_pending(self, module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        pending, self._pending = self._pending, None
        return output if pending is None else output + pending


@contextmanager
def bypassed(adapters: Iterable[AddedToOutput]) -> Iterator[None]:
    """Within the block, the network runs as if the adapters were not there (APER's frozen branch)."""
    adapters = list(adapters)
    for adapter in adapters:
        adapter.bypass = True
    try:
        yield
    finally:
        for adapter in adapters:
            adapter.bypass = False
