"""Selective LoRA: the straight-through gate, closed blocks computing and storing nothing, the task-aware path
reproducing each task's network, the sparsity penalty, checkpoints, and what a run records."""

import copy
import functools

import pytest
import torch

from benchmark import costs
from benchmark.checkpoints import Progress, resume, save_checkpoint
from benchmark.evaluation import as_tensors
from benchmark.results import iter_results
from benchmark.runtime import Runtime
from strategies._lora import add_lora, lora_layers
from strategies.base import build_strategy
from strategies.selective_lora import GatedLowRank, task_prefix
from test_suite import suite

RUNTIME = Runtime.resolve("cpu", "fp32", progress=False)
FAST = {"epochs": 2, "rank": 2, "warmup_epochs": 1}


def gated_block(score: float) -> GatedLowRank:
    torch.manual_seed(0)
    block = GatedLowRank(6, (0, 4), rank=2, scale=1.0, threshold=0.1, score_init=score)
    torch.nn.init.normal_(block.B)  # a trained block: B no longer zero
    return block


def test_straight_through_estimator_passes_the_gradient_to_the_score():
    block, x = gated_block(0.15), torch.randn(3, 6)
    upstream = torch.randn(3, 4)
    (block(x) * upstream).sum().backward()
    expected = (upstream * (x @ block.A.T @ block.B.T)).sum()  # dL/ds = <dL/d out, B A x>, the gate taken as identity
    assert block.score.grad is not None and torch.allclose(block.score.grad, expected.detach(), atol=1e-5)
    closed = gated_block(0.05)
    (closed(x) * upstream).sum().backward()
    assert closed.score.grad.abs() > 0  # a closed gate still learns whether to reopen


def test_a_closed_block_contributes_exactly_nothing():
    closed, x = gated_block(0.0999), torch.randn(3, 6)
    assert torch.equal(closed(x), torch.zeros(3, 4)) and torch.equal(closed.delta_weight(), torch.zeros(4, 6))
    assert gated_block(0.1)(x).abs().sum() > 0  # s = tau is on


def test_closed_blocks_are_dropped_after_the_task_and_store_nothing(backbone, stream):
    torch.manual_seed(0)
    strategy = build_strategy("selective_lora", {**FAST, "sparsity": 0.0}, copy.deepcopy(backbone.model), RUNTIME)
    strategy.train_task(stream.tasks[0])  # no penalty: every block stays on
    assert strategy.masks[0].all()
    gated = functools.partial(GatedLowRank, threshold=0.1, score_init=0.15)
    blocks = add_lora(strategy.backbone.blocks, strategy.config.targets, 2, 1.0, task_prefix(1), gated)
    for index, block in enumerate(blocks):  # close every other block of a second set, as if its task had trained
        torch.nn.init.normal_(block.B)
        block.score.data.fill_(0.15 if index % 2 == 0 else 0.05)
    images = as_tensors(stream.tasks[0].test)[0][:16]
    strategy.eval()
    with torch.no_grad():
        before = strategy.predict(images)
        strategy.settle(1)
        after = strategy.predict(images)
    assert torch.allclose(before, after, atol=1e-5)  # settling keeps what the gates computed
    mask = strategy.masks[1]
    assert mask.tolist() == [1.0, 0.0] * (len(mask) // 2)
    stored = sum(len(layer.adapters) for layer in lora_layers(strategy.backbone))
    assert stored == len(mask) + int(mask.sum())  # all of task 0's blocks, half of task 1's
    rank, width = 2, backbone.model.embed_dim
    sizes = {"q": 2 * width, "k": 2 * width, "v": 2 * width, "proj": 2 * width, "fc1": 5 * width, "fc2": 5 * width}
    per_set = sum(rank * sizes[name.split(".")[1]] for name in strategy.block_names)
    kept = sum(rank * sizes[name.split(".")[1]] * on for name, on in zip(strategy.block_names, mask.tolist()))
    counts = costs.parameter_counts(strategy)
    head = width * 2 + 2
    assert counts["params_added"] == per_set + kept + head + strategy.masks.numel()  # blocks, head, the masks
    assert counts["params_trainable"] == head  # after its task, everything of it is frozen but the head


def test_task_aware_path_reproduces_each_tasks_network(backbone, stream):
    torch.manual_seed(0)
    strategy = build_strategy("selective_lora", {**FAST, "sparsity": 0.5}, copy.deepcopy(backbone.model), RUNTIME)
    images = [as_tensors(task.test)[0] for task in stream.tasks[:3]]
    at_end = []
    for index, task in enumerate(stream.tasks[:3]):
        strategy.train_task(task)
        strategy.eval()
        with torch.no_grad():
            at_end.append(strategy.predict(images[index], task_id=index))
            if index == 0:  # one task so far: both modes are the same network
                assert torch.equal(strategy.predict(images[0]), at_end[0])
    with torch.no_grad():
        for index in range(3):
            later = strategy.predict(images[index], task_id=index)[:, : at_end[index].shape[1]]
            assert torch.allclose(later, at_end[index], atol=1e-5)
        agnostic = strategy.predict(images[0])[:, :2]
    assert not torch.equal(agnostic, at_end[0])  # all tasks' blocks together: another network


def active_fraction(backbone, stream, sparsity: float) -> float:
    torch.manual_seed(0)
    strategy = build_strategy("selective_lora", {"epochs": 3, "rank": 2, "warmup_epochs": 1, "sparsity": sparsity},
                              copy.deepcopy(backbone.model), RUNTIME)
    strategy.train_task(stream.tasks[0])
    return strategy.report()["metrics"]["active_fraction"]


def test_the_penalty_lowers_the_active_fraction_as_lambda_grows(backbone, stream):
    fractions = [active_fraction(backbone, stream, sparsity) for sparsity in (0.0, 0.5, 1.0, 4.0)]
    assert all(a >= b for a, b in zip(fractions, fractions[1:])), fractions
    assert fractions[0] >= 0.75 and fractions[-1] <= 0.25, fractions  # the penalty, not the task loss, closes most


def test_a_checkpoint_restores_the_stored_blocks(backbone, stream, tmp_path):
    torch.manual_seed(0)
    params = {**FAST, "sparsity": 2.0}
    strategy = build_strategy("selective_lora", params, copy.deepcopy(backbone.model), RUNTIME)
    for task in stream.tasks[:2]:
        strategy.train_task(task)
    reference = {f"backbone.{k}": v for k, v in backbone.model.state_dict().items()}
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, "run", strategy, Progress(), reference)
    fresh = build_strategy("selective_lora", params, copy.deepcopy(backbone.model), RUNTIME)
    assert resume(path, "run", fresh, reference) is not None
    images = as_tensors(stream.tasks[1].test)[0]
    strategy.eval()
    fresh.eval()
    with torch.no_grad():
        assert torch.equal(fresh.predict(images), strategy.predict(images))
        assert torch.equal(fresh.predict(images, task_id=0), strategy.predict(images, task_id=0))


def test_a_run_records_masks_fractions_both_modes_and_a_mask_plot(write_suite, tmp_path):
    out = tmp_path / "out"
    config = write_suite(strategies={"selective_lora": {**FAST, "sparsity": 3.0}})
    assert suite(config, out) == 0
    (result,) = list(iter_results(out))
    metrics = result["metrics"]
    assert len(result["gate_masks"]) == 5 and len(result["gate_masks"][0]) == len(result["gate_blocks"]) == 2 * 6
    per_task = [sum(mask) / len(mask) for mask in result["gate_masks"]]
    assert metrics["active_fraction_per_task"] == pytest.approx(per_task)
    assert metrics["active_fraction"] == pytest.approx(sum(per_task) / 5) and 0 <= metrics["active_fraction"] <= 1
    assert len(result["accuracy_matrix_task_aware"]) == 5 and "avg_acc" in metrics["task_aware"]
    assert result["retention_mode"] == "task-agnostic"
    assert (out / "runs" / result["run_id"] / "gate_masks.png").stat().st_size > 1000
