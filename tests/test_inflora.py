"""InfLoRA: the designed down-projections against an independent numpy computation, their never changing, the new
update leaving an earlier task's stored inputs alone, what trains, merged inference, FLOPs and resuming."""

import copy
import math

import numpy as np
import pytest
import torch

from benchmark import costs
from benchmark.evaluation import as_tensors
from benchmark.runtime import Runtime
from strategies._lora import task_adapters
from strategies.base import build_strategy
from strategies.inflora import InfLoRA
from test_checkpoints import assert_resuming_changes_nothing, crashing_once
from test_costs import BLOCK, HEAD, PATCH_EMBED, flops_after_first_task

RUNTIME = Runtime.resolve("cpu", "fp32", progress=False)
RANK = 3
FAST = {"epochs": 1, "rank": RANK, "lr": 1e-2}
INFLORA_CRASHES_ONCE = crashing_once(InfLoRA, "inflora_crashes_once")


def block_inputs(strategy, images: torch.Tensor) -> list[np.ndarray]:
    """What every block's attention reads (its norm1 output, all tokens), from the network as it is now (eval mode,
    earlier updates merged): hooks on norm1, independent of the strategy's own hooks on qkv."""
    outputs = []
    hooks = [block.norm1.register_forward_hook(lambda m, a, out: outputs.append(out.reshape(-1, out.shape[-1])))
             for block in strategy.backbone.blocks]
    strategy.eval()
    with torch.no_grad():
        strategy.backbone(images)
    for hook in hooks:
        hook.remove()
    return [o.double().numpy() for o in outputs]


def designed_a(inputs: np.ndarray, used: np.ndarray) -> np.ndarray:
    """A by the paper's design, in numpy: SVD of the input covariance with the used subspace projected out, top
    RANK left singular vectors, / sqrt(3)."""
    cov = inputs.T @ inputs / len(inputs)
    U, _, _ = np.linalg.svd(cov - used @ cov)
    return U[:, :RANK].T / math.sqrt(3)


def down_projections(strategy, task: int) -> list[torch.Tensor]:
    adapters = task_adapters(strategy.backbone.blocks, ("k", "v"), task)
    assert all(k.A is v.A for k, v in zip(adapters[0::2], adapters[1::2]))  # keys and values share A
    return [k.A.detach().clone() for k in adapters[0::2]]


def used_projectors(strategy) -> list[np.ndarray]:
    return [strategy.record.used_projector(i).numpy() for i in range(len(strategy.backbone.blocks))]


@pytest.fixture(scope="module")
def two_tasks(backbone, stream) -> dict:
    """InfLoRA trained on tasks 0 and 1, with what the tests compare taken along the way."""
    torch.manual_seed(0)
    strategy = build_strategy("inflora", FAST, copy.deepcopy(backbone.model), RUNTIME)
    seen = {"designs": [], "A": []}
    for task in stream.tasks[:2]:
        images = as_tensors(task.train)[0]
        used = used_projectors(strategy) if task.index else [np.zeros((32, 32))] * 2
        seen["designs"].append([designed_a(x, p) for x, p in zip(block_inputs(strategy, images), used)])
        strategy.train_task(task)
        seen["A"].append(down_projections(strategy, task.index))
        if task.index == 0:
            seen["stored_inputs"] = block_inputs(strategy, images)
            seen["used"] = used_projectors(strategy)
            seen["params"] = {n: p.detach().clone() for n, p in strategy.named_parameters()}
    seen["strategy"] = strategy
    return seen


def test_down_projections_are_the_design_and_never_change(two_tasks):
    for task, (designs, matrices) in enumerate(zip(two_tasks["designs"], two_tasks["A"])):
        for design, A in zip(designs, matrices):
            # singular vectors are defined up to sign: compare the row spaces (A^T A) and the row norms
            assert np.allclose(A.double().numpy().T @ A.double().numpy(), design.T @ design, atol=1e-5), task
            assert torch.allclose(A.norm(dim=1), torch.full((RANK,), 1 / math.sqrt(3)), atol=1e-5)
    for task in range(2):  # unchanged, bit for bit, by their own task's training and the later one
        assert all(torch.equal(a, b) for a, b in zip(down_projections(two_tasks["strategy"], task),
                                                     two_tasks["A"][task]))


def test_a_new_update_leaves_the_earlier_tasks_subspace_untouched(two_tasks, stream):
    """Task 0's inputs stored after task 0; task 1's update moves their part in the recorded subspace by less than
    1e-5 of what it moves task 1's own inputs (exactly 0 in exact arithmetic: A's rows avoid that subspace)."""
    strategy = two_tasks["strategy"]
    new_inputs = block_inputs(strategy, as_tensors(stream.tasks[1].train)[0])
    adapters = task_adapters(strategy.backbone.blocks, ("k", "v"), 1)
    for layer, (old, new) in enumerate(zip(two_tasks["stored_inputs"], new_inputs)):
        for adapter in adapters[2 * layer: 2 * layer + 2]:
            delta = adapter.delta_weight().detach().double().numpy()
            assert np.linalg.norm(delta) > 0  # the task did learn an update
            moved_old = np.linalg.norm((two_tasks["used"][layer] @ old.T).T @ delta.T)
            moved_new = np.linalg.norm(new @ delta.T)
            assert moved_old < 1e-5 * moved_new, (layer, moved_old, moved_new)


def test_only_the_tasks_up_projections_and_its_head_train(two_tasks):
    strategy, before = two_tasks["strategy"], two_tasks["params"]
    kept = [n for n, p in strategy.named_parameters() if n in before and not n.startswith("heads.")]
    assert kept and all(torch.equal(strategy.get_parameter(n), before[n]) for n in kept)  # task 0's B among them
    assert torch.equal(strategy.heads.frozen_weight, before["heads.weight"])  # task 0's head, frozen
    new_b = [n for n, p in strategy.named_parameters() if ".t1_" in n and n.endswith(".B")]
    assert len(new_b) == 4 and all(strategy.get_parameter(n).abs().sum() > 0 for n in new_b)
    counts = costs.parameter_counts(strategy)
    assert counts["params_trainable"] == 32 * 2 + 2  # after the task only the newest head is left trainable
    per_task = 2 * (RANK * 32 + 2 * 32 * RANK)  # per block one shared A and two B
    assert counts["params_added"] >= 2 * per_task + 4 * 32 + 4  # + the record's bases and flags


def test_merged_and_unmerged_logits_agree_and_inference_costs_the_backbone(two_tasks, stream,
                                                                           tiny_backbone_params):
    strategy = two_tasks["strategy"]
    images = as_tensors(stream.tasks[0].test)[0][:32]
    with torch.no_grad():
        strategy.train()  # every update applied as W0 x + B A x
        unmerged = strategy.predict(images)
        strategy.eval()  # (W0 + sum B A) x
        merged = strategy.predict(images)
    assert torch.allclose(merged, unmerged, atol=1e-5)
    assert flops_after_first_task("inflora", {"rank": RANK}, tiny_backbone_params) == 2 * BLOCK + PATCH_EMBED + HEAD


def test_a_resumed_inflora_run_equals_an_uninterrupted_one(write_suite, tmp_path):
    """The updates of tasks 0 and 1 and the subspace record are rebuilt from the checkpoint."""
    assert_resuming_changes_nothing("inflora_crashes_once", INFLORA_CRASHES_ONCE, {"epochs": 1, "rank": 2},
                                    write_suite, tmp_path)
