"""One set of adapters per task on a frozen ViT, shared by the LAMDA adapter methods that keep a set per task and
choose between the sets, concatenate them or merge them (EASE, MOS, TUNA).

A set is one AdaptFormer adapter per block (`strategies._adapter.Adapter`, position `mlp`: parallel to the MLP, input
the residual stream, ReLU, dropout on the bottleneck, fixed output scale, "lora" initialisation), as the three
references build it (sun-hailong/CVPR24-Ease@6d67508 backbone/vit_ease.py:31-90, 155-178, 285-302;
sun-hailong/AAAI25-MOS@8d5e07c backbone/vit_mos.py:265-275; TUNA backbone/vit_tuna.py:344-353). The bank attaches
every set to the backbone's blocks when it is added and keeps every set bypassed, so the backbone computes the
pre-trained network; `selected(i)` runs set i for the passes inside it (`features(backbone, x, i)`), and
`every_set(backbone, x)` gives each set's features of a batch (one full pass per set: the methods' inference cost).
With a runtime that shares (`benchmark.sharing`), an evaluation pass of set i is keyed by the backbone's and set
i's tensors and settings alone, so a set frozen after its task is run once on the test images, not once per
evaluation: the accuracy matrix's T evaluations cost T set-passes per image instead of T (T + 1) / 2, the same
tensors either way. The key leaves out the blocks' hooks: they are the bank's adapters, all bypassed but set i's.
The references keep one ViT class that loops over the blocks with a chosen adapter list; hooks give the same
function on timm's own ViT.

Merging, entry by entry over the sets' tensors of one name (`merged_state`):
- `ema_merge`: theta <- (1 - m) theta + m * (mean of the earlier sets' theta) (MOS's adapter merging,
  backbone/vit_mos.py:328-346, with the prefix sums of the earlier sets, :315-326);
- `emr_merge`: the sign of the sets' mean (a zero mean counts as negative, as the reference's `(mean > 0) * 2 - 1`)
  times the largest magnitude among the sets whose entry has that sign, 0 where none has (TUNA's universal adapter,
  EMR-merging's unified vector: TUNA backbone/vit_tuna.py:82-115; its masks and rescalers are computed there but not
  used, so they are not here).
"""

from __future__ import annotations

from contextlib import contextmanager
from functools import partial
from typing import Callable, Iterator, Optional, Sequence

import torch
from torch import nn

from benchmark.runtime import Runtime
from benchmark.sharing import shared_pass
from benchmark.streams import Task
from strategies._adapter import Adapter
from strategies._prototypes import task_features

Rule = Callable[[Sequence[torch.Tensor]], torch.Tensor]  # one name's tensors of several sets -> the merged tensor


class AdapterBank(nn.Module):
    """Adapter sets (`sets[i]`: one adapter per block) attached to one backbone's blocks, all bypassed unless
    selected. The blocks are held in a plain tuple: the strategy owns the backbone."""

    def __init__(self, backbone: nn.Module, bottleneck: int, scale: float, dropout: float) -> None:
        super().__init__()
        self.sets = nn.ModuleList()
        self._blocks = tuple(backbone.blocks)
        self.dim, self.bottleneck, self.scale, self.dropout = backbone.num_features, bottleneck, scale, dropout

    def __len__(self) -> int:
        return len(self.sets)

    def add(self, like: Optional[int] = None) -> nn.ModuleList:
        """Append a set, attached and bypassed: freshly initialised (it adds nothing until trained), or with the
        weights of set `like` (MOS and TUNA train one adapter on from task to task and keep a copy per task). The
        earlier sets are frozen: only the newest trains (so a strategy's trainable parameters are one set, as the
        references count them)."""
        for earlier in self.sets:
            earlier.requires_grad_(False)
        device = next(self._blocks[0].parameters()).device
        new = nn.ModuleList(Adapter(self.dim, self.bottleneck, position="mlp", activation="relu", scale=self.scale,
                                    dropout=self.dropout) for _ in self._blocks).to(device)
        for adapter, block in zip(new, self._blocks):
            adapter.attach(block)
            adapter.bypass = True
        if like is not None:
            new.load_state_dict(self.sets[like].state_dict())
        self.sets.append(new)
        return new

    def add_continuing(self) -> int:
        """Append a set that starts from the newest set's weights (the first one fresh), as MOS and TUNA train one
        adapter on from task to task and keep a copy per task; returns its index."""
        self.add(like=len(self.sets) - 1 if len(self.sets) else None)
        return len(self.sets) - 1

    @contextmanager
    def selected(self, index: Optional[int]) -> Iterator[None]:
        """Passes inside run set `index` (None: no set, the pre-trained network); afterwards every set is bypassed
        again (the resting state that fingerprints see)."""
        chosen = [] if index is None else list(self.sets[index])
        for adapter in chosen:
            adapter.bypass = False
        try:
            yield
        finally:
            for adapter in chosen:
                adapter.bypass = True

    def features(self, backbone: nn.Module, x: torch.Tensor, index: Optional[int]) -> torch.Tensor:
        """`backbone(x)` with set `index` (None: the pre-trained features)."""
        with self.selected(index):
            return backbone(x)

    def shared_features(self, backbone: nn.Module, x: torch.Tensor, index: Optional[int],
                        runtime: Runtime) -> torch.Tensor:
        """`features(backbone, x, index)`, or, for a gradient-free evaluation pass with `runtime.share`, the
        outputs of an earlier pass of the same backbone and set on the same batch."""
        network = nn.ModuleList([backbone] if index is None else [backbone, self.sets[index]])
        network.training = False  # a container only: the modes that count are its members'
        return shared_pass(network, "pre-trained network" if index is None else "backbone with an adapter set",
                           partial(self.features, backbone, index=index), x, runtime.share, runtime.context, hooks=False)

    def every_set(self, backbone: nn.Module, x: torch.Tensor, runtime: Runtime) -> torch.Tensor:
        """(sets, n, d): each set's features of `x`, one pass per set (shared as in `shared_features`); before the
        first set, the pre-trained network's as the only entry (a strategy that has learnt nothing yet still costs
        one pass)."""
        indices: Sequence[Optional[int]] = range(len(self.sets)) if len(self.sets) else [None]
        return torch.stack([self.shared_features(backbone, x, index, runtime) for index in indices])

    def task_features(self, backbone: nn.Module, task: Task, index: Optional[int],
                      runtime: Runtime) -> tuple[torch.Tensor, torch.Tensor]:
        """(features with set `index`, labels) of `task`'s training images under the test transform."""
        return task_features(partial(self.features, backbone, index=index), task.train_unaugmented, runtime)

    def freeze(self, index: int) -> None:
        self.sets[index].requires_grad_(False)

    def grow_to(self, count: int) -> None:
        """Add fresh sets until there are `count` (before a checkpoint's tensors load into them; the earlier ones
        frozen, as after training)."""
        while len(self.sets) < count:
            self.add()


def stored_sets(state: dict[str, torch.Tensor], prefix: str) -> int:
    """How many sets a (checkpoint) state holds under `prefix` (a bank's name in its strategy, e.g. "bank")."""
    start = f"{prefix}.sets."
    found = [int(name[len(start):].split(".")[0]) for name in state if name.startswith(start)]
    return max(found) + 1 if found else 0


def ema_merge(current: torch.Tensor, earlier: Sequence[torch.Tensor], momentum: float) -> torch.Tensor:
    """(1 - momentum) * current + momentum * mean(earlier): MOS's pull of a task's adapter towards the earlier ones."""
    return (1 - momentum) * current + momentum * torch.stack(list(earlier)).mean(0)


def emr_merge(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """Elect a sign per entry (the mean's; zero counts as negative), keep the largest magnitude among the tensors
    that agree with it (0 if none does)."""
    stacked = torch.stack(list(tensors))
    sign = torch.where(stacked.mean(0) > 0, 1.0, -1.0).to(stacked.dtype)
    agreeing = stacked * sign > 0
    return (stacked.abs() * agreeing).amax(0) * sign


def merged_state(sets: Sequence[nn.Module], rule: Rule) -> dict[str, torch.Tensor]:
    """Every tensor of the sets' state merged by `rule` across the sets, name by name."""
    states = [module.state_dict() for module in sets]
    return {name: rule([state[name] for state in states]) for name in states[0]}
