"""The memory check before a strategy is built (`strategies/_memory.py`): the estimate made on the meta device is the
bytes a real build allocates, the training additions are their closed forms on the tiny vit-mini (depth 2, width 32),
and a size that cannot fit is refused in one line before anything is allocated."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

from benchmark.errors import ConfigError
from benchmark.runtime import Runtime
from strategies._memory import META, check_memory, device_memory, meta_copy, module_bytes
from strategies.base import STRATEGIES, build_strategy, strategy_config

RUNTIME = Runtime.resolve("cpu", "fp32", progress=False)
DEPTH, WIDTH = 2, 32  # the tiny backbone of conftest.py


def allocated_bytes(module: torch.nn.Module) -> int:
    """Bytes of a real module's tensors, counted by their storages (each storage once)."""
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes()
                for t in (*module.parameters(), *module.buffers())}
    return sum(storages.values())


def meta_build(name: str, params: dict, backbone) -> torch.nn.Module:
    with torch.device(META):
        return STRATEGIES.get(name)(meta_copy(backbone.model), strategy_config(name, params),
                                    dataclasses.replace(RUNTIME, device=META))


@pytest.mark.parametrize("name, params", [("lora", {"rank": 4}), ("l2p", {}), ("ranpac", {"projection_dim": 64}),
                                          ("coda_prompt", {})])
def test_the_meta_estimate_is_what_a_real_build_allocates(name, params, backbone):
    real = build_strategy(name, params, copy.deepcopy(backbone.model), RUNTIME)
    meta = meta_build(name, params, backbone)
    assert all(t.device == META for t in meta.parameters())
    assert all(t.device.type == "cpu" for t in backbone.model.parameters())  # the backbone itself is untouched
    assert module_bytes(meta) == allocated_bytes(real) > 0


def test_training_additions_in_closed_form(backbone):
    """One task's LoRA factors: rank x (in + out) per target and block, float32; RanPAC: the d x M projection in
    float32 and two M x M float64 matrices (G and its solve)."""
    rank, model = 3, copy.deepcopy(backbone.model)
    sd_lora = build_strategy("sd_lora", {"rank": rank, "targets": ["q", "v", "fc1"]}, model, RUNTIME)
    hidden = sd_lora.backbone.blocks[0].mlp.fc1.out_features
    per_block = rank * (WIDTH + WIDTH) * 2 + rank * (WIDTH + hidden)
    assert sd_lora.training_bytes() == 4 * DEPTH * per_block
    inflora = build_strategy("inflora", {"rank": rank}, copy.deepcopy(backbone.model), RUNTIME)
    assert inflora.training_bytes() == 4 * DEPTH * 2 * rank * (WIDTH + WIDTH)  # k and v
    ranpac = build_strategy("ranpac", {"projection_dim": 50, "epochs": 0}, copy.deepcopy(backbone.model), RUNTIME)
    assert ranpac.training_bytes() == 4 * WIDTH * 50 + 2 * 50 * 50 * 8


def test_one_tasks_lora_updates_add_what_was_estimated(backbone):
    """SD-LoRA's estimate against the tensors `add_task_updates` really allocates (less its magnitude and norm
    buffers)."""
    strategy = build_strategy("sd_lora", {"rank": 2}, copy.deepcopy(backbone.model), RUNTIME)
    before = allocated_bytes(strategy)
    added = strategy.add_task_updates()
    extras = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for update in added
              for name, t in (*update.named_parameters(), *update.named_buffers()) if name not in ("A", "B")}
    magnitudes = sum(extras.values())  # one shared magnitude and each update's norm buffer
    assert allocated_bytes(strategy) - before - magnitudes == strategy.training_bytes()


def test_a_size_that_cannot_fit_fails_before_anything_is_allocated(backbone):
    """A rank whose factors alone exceed the machine's memory: one line naming the strategy, in well under a second
    of meta-device work and without touching real memory."""
    rank = device_memory(torch.device("cpu")) // (4 * DEPTH * 2 * 2 * WIDTH) + 1  # just over, by the closed form
    with pytest.raises(ConfigError, match=r"^strategies\.lora: its parameters and state alone would take about"):
        build_strategy("lora", {"rank": rank}, backbone.model, RUNTIME)
    check_memory(lambda model, runtime: STRATEGIES.get("lora")(model, strategy_config("lora", {"rank": 8}), runtime),
                 "strategies.lora", backbone.model, RUNTIME)  # an ordinary rank passes
