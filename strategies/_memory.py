"""A strategy's memory, estimated before anything is allocated: sizes that can never fit fail in one line.

The strategy is built once on PyTorch's meta device (tensors with shapes and no data: a LoRA of rank 10^9 "allocates"
18 TB there in microseconds), on a meta copy of the backbone (`meta_copy`: no tensor of the real one is copied). Its
parameters and buffers, plus what it says it will add while training (`Strategy.training_bytes`: one task's adapters,
RanPAC's projection and Gram matrix), must fit the memory of the device it runs on (`device_memory`). This is a
floor, not a prediction of the peak: gradients, optimiser states and activations come on top, so a configuration that
passes may still run out of memory; one that fails here never could have run.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from typing import TYPE_CHECKING, Any, Callable

import torch
from torch import nn

from benchmark.errors import ConfigError
from benchmark.runtime import Runtime

if TYPE_CHECKING:
    from strategies.base import Strategy

META = torch.device("meta")


def device_memory(device: torch.device) -> int:
    """Bytes of memory on `device`: a GPU's total, or this machine's physical memory (within a cgroup's limit)."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    try:
        with open("/sys/fs/cgroup/memory.max") as limit:
            text = limit.read().strip()
        return min(physical, int(text)) if text.isdigit() else physical
    except OSError:
        return physical


def meta_copy(model: nn.Module) -> nn.Module:
    """A copy of `model` whose parameters and buffers live on the meta device (same shapes, dtypes, `requires_grad`);
    the model's own tensors are not copied."""
    memo: dict[int, Any] = {}
    for parameter in model.parameters():
        memo[id(parameter)] = nn.Parameter(torch.empty_like(parameter, device=META),
                                           requires_grad=parameter.requires_grad)
    for buffer in model.buffers():
        memo[id(buffer)] = torch.empty_like(buffer, device=META)
    return copy.deepcopy(model, memo)


def module_bytes(module: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in (*module.parameters(), *module.buffers()))


def readable(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if size < 1000 or unit == "PB":
            return f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} PB"


def check_memory(build: Callable[[nn.Module, Runtime], "Strategy"], where: str, backbone: nn.Module,
                 runtime: Runtime) -> None:
    """Build the strategy (`build(backbone, runtime)`) on the meta device and raise a ConfigError naming `where`
    (e.g. 'strategies.lora') when its parameters, buffers and training additions exceed the run's device memory."""
    meta_runtime = dataclasses.replace(runtime, device=META)
    with torch.device(META):
        strategy = build(meta_copy(backbone), meta_runtime)
        needed = module_bytes(strategy) + strategy.training_bytes()
    available = device_memory(runtime.device)
    if needed > available:
        raise ConfigError(f"{where}: its parameters and state alone would take about {readable(needed)}, more than "
                          f"the {readable(available)} of memory on {runtime.device.type}; lower its sizes (ranks, "
                          "widths, prompt lengths and pools, projection sizes)")
