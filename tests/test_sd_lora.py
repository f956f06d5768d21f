"""SD-LoRA: old directions frozen bit for bit while their magnitudes keep training, the update each layer gets against
an independent numpy computation, what trains, merged inference, FLOPs and resuming."""

import copy

import numpy as np
import pytest
import torch

from benchmark import costs
from benchmark.evaluation import as_tensors
from benchmark.runtime import Runtime
from strategies._lora import task_adapters
from strategies.base import build_strategy
from strategies.sd_lora import SDLoRA
from test_checkpoints import assert_resuming_changes_nothing, crashing_once
from test_costs import BLOCK, HEAD, PATCH_EMBED, flops_after_first_task

RUNTIME = Runtime.resolve("cpu", "fp32", progress=False)
RANK = 2
FAST = {"epochs": 1, "rank": RANK}
SD_LORA_CRASHES_ONCE = crashing_once(SDLoRA, "sd_lora_crashes_once")


def directions(strategy, task: int) -> list[tuple[torch.Tensor, ...]]:
    return [(a.A.detach().clone(), a.B.detach().clone(), a.inverse_norm.clone(), a.direction().detach().clone())
            for a in task_adapters(strategy.backbone.blocks, ("q", "v"), task)]


@pytest.fixture(scope="module")
def three_tasks(backbone, stream) -> dict:
    torch.manual_seed(0)
    strategy = build_strategy("sd_lora", FAST, copy.deepcopy(backbone.model), RUNTIME)
    seen = {"magnitudes": [], "task0": []}
    for task in stream.tasks[:3]:
        strategy.train_task(task)
        seen["magnitudes"].append([float(m.detach()) for m in strategy.magnitudes])
        if task.index >= 1:  # task 0's direction was fixed when task 1 started
            seen["task0"].append(directions(strategy, 0))
    seen["strategy"] = strategy
    return seen


def test_old_directions_stay_bit_identical_while_their_magnitudes_move(three_tasks):
    after_task1, after_task2 = three_tasks["task0"]
    assert all(torch.equal(x, y) for old, new in zip(after_task1, after_task2) for x, y in zip(old, new))
    magnitudes = three_tasks["magnitudes"]  # [m0] after task 0, [m0, m1] after task 1, [m0, m1, m2] after task 2
    assert magnitudes[0][0] != 0.8  # m0 trained with its own task
    assert magnitudes[1][0] != 0.8 and magnitudes[2][0] != magnitudes[1][0]  # and keeps training in tasks 1 and 2
    assert magnitudes[2][1] != magnitudes[1][1]
    strategy = three_tasks["strategy"]
    assert all(not a.A.requires_grad and not a.B.requires_grad for t in (0, 1)
               for a in task_adapters(strategy.backbone.blocks, ("q", "v"), t))


def test_each_layer_adds_the_magnitudes_times_the_normalised_directions(three_tasks, backbone):
    """W = W0 + sum over old tasks m_i B_i A_i / (||B_i||_F ||A_i||_F) + m_t B_t A_t, on q and v rows, in numpy."""
    strategy = three_tasks["strategy"]
    magnitudes = [float(m.detach()) for m in strategy.magnitudes]
    for block, original in zip(strategy.backbone.blocks, backbone.model.blocks):
        expected = original.attn.qkv.weight.detach().double().numpy().copy()
        for task in range(3):
            for target, adapter in zip(("q", "v"), task_adapters([block], ("q", "v"), task)):
                A, B = adapter.A.detach().double().numpy(), adapter.B.detach().double().numpy()
                norm = np.linalg.norm(A) * np.linalg.norm(B) if task < 2 else 1.0
                rows = slice(0, 32) if target == "q" else slice(64, 96)
                expected[rows] += magnitudes[task] * (B @ A) / norm
        assert np.allclose(block.attn.qkv.merged_weight().double().numpy(), expected, atol=1e-6)


def test_a_fixed_direction_restarts_its_magnitude_at_the_reference_init(backbone, stream):
    torch.manual_seed(0)
    strategy = build_strategy("sd_lora", FAST, copy.deepcopy(backbone.model), RUNTIME)
    strategy.train_task(stream.tasks[0])
    strategy.fix_directions(0)
    assert float(strategy.magnitudes[0].detach()) == pytest.approx(0.8)
    counts = costs.parameter_counts(strategy)
    assert counts["params_trainable"] == 1 + 32 * 2 + 2  # m0 and the head: task 0's A and B are frozen now


def test_merged_and_unmerged_logits_agree_and_inference_costs_the_backbone(three_tasks, stream,
                                                                           tiny_backbone_params):
    strategy = three_tasks["strategy"]
    images = as_tensors(stream.tasks[0].test)[0][:32]
    with torch.no_grad():
        strategy.train()
        unmerged = strategy.predict(images)
        strategy.eval()
        merged = strategy.predict(images)
    assert torch.allclose(merged, unmerged, atol=1e-5)
    counts = costs.parameter_counts(strategy)
    live = 2 * 2 * (RANK * 32 + 32 * RANK)  # task 2's A and B on q and v of both blocks
    assert counts["params_trainable"] == live + 3 + 32 * 6 + 6  # + three magnitudes + the 6-class head
    assert flops_after_first_task("sd_lora", {"rank": RANK}, tiny_backbone_params) == 2 * BLOCK + PATCH_EMBED + HEAD


def test_a_resumed_sd_lora_run_equals_an_uninterrupted_one(write_suite, tmp_path):
    """Tasks 0 (direction fixed) and 1 (still live) are rebuilt from the checkpoint, magnitudes tied again."""
    assert_resuming_changes_nothing("sd_lora_crashes_once", SD_LORA_CRASHES_ONCE, {"epochs": 1, "rank": 2},
                                    write_suite, tmp_path)
