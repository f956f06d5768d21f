"""CL-LoRA: the fixed orthogonal down-projection of the shared LoRA, the block-weighted task branches and their
prototype logits against a network built by hand, the distillation term, the gradient reassignment and the block
weights' orthogonality term against hand cases, the teacher, parameter counts on ViT-B/16 against the official log,
inference FLOPs, bad settings and resuming from a checkpoint."""

import copy
import math

import numpy as np
import pytest
import timm
import torch

from benchmark import costs
from benchmark.checkpoints import Progress, resume, save_checkpoint
from benchmark.errors import ConfigError
from benchmark.evaluation import as_tensors
from benchmark.runtime import Runtime
from strategies._first_session import CosineHead
from strategies._tuned import set_train_modes
from strategies._lora import only_adapters, target_layer, task_prefix
from strategies.base import build_strategy, strategy_config
from strategies.cl_lora import SHARED, TEACHER, BranchPrototypes, distillation, orthogonality, reassignment_weights
from test_costs import BLOCK, HEAD, PATCH_EMBED, flops_after_first_task

RUNTIME = Runtime.resolve("cpu", "fp32", progress=False)
RANK = 2
FAST = {"epochs": 1, "rank": RANK, "batch_size": 128}
WIDTH = 32  # the tiny vit-mini: 2 blocks of width 32, so block 0 is shared and block 1 task-specific
ROWS = {"q": slice(0, WIDTH), "k": slice(WIDTH, 2 * WIDTH), "v": slice(2 * WIDTH, 3 * WIDTH)}


def shared(strategy, target: str, name: str = SHARED):
    return target_layer(strategy.backbone.blocks[0], target).adapters[name + target]


def specific(strategy, target: str, task: int):
    return target_layer(strategy.backbone.blocks[1], target).adapters[task_prefix(task) + target]


@pytest.fixture(scope="module")
def three_tasks(backbone, stream) -> dict:
    torch.manual_seed(0)
    strategy = build_strategy("cl_lora", FAST, copy.deepcopy(backbone.model), RUNTIME)
    seen = {"A": [shared(strategy, t).A.detach().clone() for t in ("q", "v")], "shared_B": [], "teacher_B": [],
            "block_weights": []}
    for task in stream.tasks[:3]:
        strategy.train_task(task)
        seen["shared_B"].append([shared(strategy, t).B.detach().clone() for t in ("q", "v")])
        seen["block_weights"].append([w.detach().clone() for w in strategy.block_weights])
        if task.index >= 1:
            seen["teacher_B"].append([shared(strategy, t, TEACHER).B.detach().clone() for t in ("q", "v")])
    seen["strategy"] = strategy
    return seen


def test_the_shared_down_projections_are_orthonormal_and_never_change(three_tasks):
    strategy = three_tasks["strategy"]
    for target, before in zip(("q", "v"), three_tasks["A"]):
        A = shared(strategy, target).A
        assert A.shape == (RANK, WIDTH) and not A.requires_grad
        assert np.allclose(A.double().numpy() @ A.double().numpy().T, np.eye(RANK), atol=1e-6)
        assert torch.equal(A, before)  # bit for bit after three tasks
        assert shared(strategy, target, TEACHER).A is A  # the teacher shares it
    first, last = three_tasks["shared_B"][0], three_tasks["shared_B"][-1]
    assert all(b.abs().sum() > 0 for b in first)  # the up-projections train from zero, task after task
    assert all(not torch.equal(x, y) for x, y in zip(first, last))
    # task-specific down-projections start orthonormal too, but train
    assert not specific(strategy, "q", 0).A.requires_grad and specific(strategy, "q", 2).A.requires_grad


def test_the_teacher_is_the_shared_lora_as_the_previous_task_left_it(three_tasks):
    """Task t's teacher (kept when it started) equals task t - 1's final shared up-projections."""
    for task in (1, 2):
        assert all(torch.equal(t, s) for t, s in zip(three_tasks["teacher_B"][task - 1],
                                                       three_tasks["shared_B"][task - 1]))


def test_block_weights_start_in_the_references_range_and_freeze_with_their_task(three_tasks):
    after = three_tasks["block_weights"]
    assert [len(ws) for ws in after] == [1, 2, 3]
    assert after[0][0].shape == (3, 1)  # q, k, v x one task-specific block
    assert torch.equal(after[1][0], after[2][0])  # task 0's weights no longer move once task 1 has started
    strategy = three_tasks["strategy"]
    assert [w.requires_grad for w in strategy.block_weights] == [False, False, True]
    torch.manual_seed(1)
    fresh = build_strategy("cl_lora", {**FAST, "shared_blocks": 1}, copy.deepcopy(strategy.backbone), RUNTIME)
    fresh.start_task()
    drawn = fresh.block_weights[0]
    assert bool(((drawn >= 0.5) & (drawn < 1.5)).all()) and len(drawn.unique()) == 3  # U(0.5, 1.5)


def hand_built_branch(strategy, original: torch.nn.Module, task: int) -> torch.nn.Module:
    """The network of task `task`'s branch with every update written into plain qkv weights, in numpy: block 0 gets
    W0 + B_s A_s on the q and v rows, block 1 gets W0 + w[part] B_t A_t with task t's block weights."""
    model = copy.deepcopy(original)
    model.reset_classifier(0)
    weights = strategy.block_weights[task].detach().double().numpy()
    for index, parts in ((0, {t: (1.0, shared(strategy, t)) for t in ("q", "v")}),
                         (1, {t: (weights[p, 0], specific(strategy, t, task)) for p, t in ((0, "q"), (2, "v"))})):
        qkv = model.blocks[index].attn.qkv
        W = qkv.weight.detach().double().numpy().copy()
        for target, (factor, adapter) in parts.items():
            W[ROWS[target]] += factor * adapter.B.detach().double().numpy() @ adapter.A.detach().double().numpy()
        qkv.weight.data = torch.from_numpy(W).float()
    return model.eval()


def test_each_branch_scores_its_own_classes_by_cosine_to_its_prototypes(three_tasks, backbone, stream):
    """predict = for every task t: cos(branch t's features, branch t's class means over the task's training images),
    the branches built by hand; class-incremental units are contiguous, so the blocks concatenate."""
    strategy = three_tasks["strategy"].eval()
    images, _ = as_tensors(stream.tasks[0].test)
    images = images[:16]
    expected = []
    with torch.no_grad():
        for task in stream.tasks[:3]:
            branch = hand_built_branch(strategy, backbone.model, task.index)
            train_images, labels = as_tensors(task.train_unaugmented)
            features = branch(train_images).double().numpy()
            means = np.stack([features[labels.numpy() == unit].mean(0) for unit in task.labels])
            test = branch(images).double().numpy()
            expected.append((test / np.linalg.norm(test, axis=1, keepdims=True))
                            @ (means / np.linalg.norm(means, axis=1, keepdims=True)).T)
        logits = strategy.predict(images).double().numpy()
    assert logits.shape == (16, 6)
    assert np.allclose(logits, np.concatenate(expected, axis=1), atol=1e-4)


def test_distillation_is_cross_entropy_to_the_softened_teacher_by_hand():
    """T = 2: teacher (0, 2 ln 3) softens to (1/4, 3/4); a uniform student pays ln 2, an equal one the entropy."""
    teacher = torch.tensor([[0.0, 2 * math.log(3)], [0.0, 2 * math.log(3)]])
    student = torch.tensor([[5.0, 5.0], [0.0, 2 * math.log(3)]])
    entropy = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    assert float(distillation(student, teacher, 2.0)) == pytest.approx((math.log(2) + entropy) / 2, rel=1e-6)


def test_gradient_reassignment_weights_are_row_norms_normalised_to_mean_one_by_hand():
    teacher_up = torch.tensor([[3.0, 4.0], [0.0, 0.0], [6.0, 8.0]])  # row norms 5, 0, 10: sum 15, 3 rows
    assert reassignment_weights(teacher_up).tolist() == pytest.approx([1.0, 0.0, 2.0])
    assert reassignment_weights(torch.zeros(4, 2)).tolist() == [1.0] * 4  # an untrained teacher reassigns nothing


def test_the_distillation_step_moves_shared_up_projections_by_the_reassigned_gradient(three_tasks, stream):
    """Plain SGD (no momentum, no decay): B_after - B_before = -lr w * dKD/dB, the gradient taken independently by
    autograd on the same loss, w the teacher's row weights."""
    strategy = copy.deepcopy(three_tasks["strategy"])
    strategy.start_task()
    set_train_modes(strategy)  # as in training: the adapted layers' unmerged, differentiable path
    with torch.no_grad():
        for target in ("q", "v"):
            shared(strategy, target).B.add_(0.05 * torch.randn(WIDTH, RANK))  # student != teacher: a gradient
    torch.manual_seed(0)
    head = CosineHead(WIDTH, 2)
    images = as_tensors(stream.tasks[3].train)[0][:8]
    students = [shared(strategy, t).B for t in ("q", "v")]
    with torch.no_grad(), only_adapters(strategy.shared_layers(), TEACHER):
        teacher = strategy.shared_features(images)
    loss = 5.0 * distillation(head(strategy.shared_features(images)), head(teacher), 2.0)
    gradients = torch.autograd.grad(loss, students)
    before = [b.detach().clone() for b in students]
    lr = 0.1
    strategy.distillation_step(images, head, torch.optim.SGD(students + list(head.parameters()), lr=lr))
    for target, b0, g, b1 in zip(("q", "v"), before, gradients, students):
        w = reassignment_weights(shared(strategy, target, TEACHER).B)
        assert not torch.allclose(w, torch.ones_like(w))  # a real reassignment
        assert torch.allclose(b1.detach() - b0, -lr * w[:, None] * g, atol=1e-7)


def test_block_weight_orthogonality_by_hand():
    current = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    old = [torch.tensor([[2.0, 0.0], [0.0, 0.0]]), torch.tensor([[-1.0, 1.0], [0.0, 0.0]])]  # |cos| 1 and 1/sqrt 2
    assert float(orthogonality(old, current)) == pytest.approx((1 + 1 / math.sqrt(2)) / 2, rel=1e-6)
    assert float(orthogonality([], current)) == 0.0


def test_a_class_held_by_several_branches_takes_its_best_cosine():
    """Domain-incremental streams: unit 0 in both branches gets the larger of its two cosines."""
    prototypes = BranchPrototypes(2)
    prototypes.add(0, torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 1]))
    prototypes.add(1, torch.tensor([[1.0, 1.0], [3.0, 1.0]]), torch.tensor([0, 0]))  # unit 0's mean (2, 1)
    branches = [torch.tensor([[0.0, 1.0]]), torch.tensor([[2.0, 1.0]])]
    assert prototypes(branches)[0].tolist() == pytest.approx([1.0, 1.0])  # unit 0: max(0, 1); unit 1: 1
    other = prototypes([torch.tensor([[1.0, 0.0]]), torch.tensor([[-1.0, 0.0]])])[0]
    assert other.tolist() == pytest.approx([1.0, 0.0])  # unit 0: max(1, -2 / sqrt 5); unit 1: 0


@pytest.mark.parametrize("rank, trainable", [(10, 276_498), (8, 221_202)])
def test_trainable_parameters_on_vit_b_match_the_official_log(rank, trainable):
    """ViT-B/16, q and v of blocks 0-5 shared, 6-11 task-specific: the official VTAB log (rank 10) prints
    "Trainable params: 276498" (JiangpengHe/CL-LoRA@60c6acb logs/cllora/vtab/0/10/ _1993_vit_base_patch16_224_in21k
    _cllora.log:44): 12 x 768 r shared up-projections + 12 x 2 x 768 r task-specific factors + 18 block weights,
    about 0.3% of the backbone (the paper). Rank 8 is exps/cifar.json's. The old task's adapters freeze when the
    next task starts, so the count stays."""
    torch.manual_seed(0)
    strategy = build_strategy("cl_lora", {"rank": rank}, timm.create_model("vit_base_patch16_224", pretrained=False),
                              RUNTIME)
    for _ in range(2):
        strategy.start_task()
        counts = costs.parameter_counts(strategy)
        assert counts["params_trainable"] == trainable
    assert round(100 * trainable / (counts["params_total"] - counts["params_added"]), 1) == 0.3
    # added: the shared A and B, the teacher's B, two tasks' A and B, two tasks' block weights
    assert counts["params_added"] == (12 + 12 + 12 + 2 * 24) * 768 * rank + 2 * 18


def test_inference_runs_the_shared_block_once_and_each_branch(tiny_backbone_params):
    """After the first task: patch embedding, the shared block, one branch's block, cosines to 2 prototypes."""
    assert flops_after_first_task("cl_lora", {"rank": RANK}, tiny_backbone_params) == (
        2 * BLOCK + PATCH_EMBED + HEAD)


def test_settings_that_leave_no_task_specific_block_are_refused(backbone):
    with pytest.raises(ConfigError, match="shared_blocks.*less than the backbone's depth \\(2 blocks\\)"):
        build_strategy("cl_lora", {"shared_blocks": 2}, copy.deepcopy(backbone.model), RUNTIME)
    with pytest.raises(ConfigError, match="rank.*at most the backbone's width \\(32\\)"):
        build_strategy("cl_lora", {"rank": 33}, copy.deepcopy(backbone.model), RUNTIME)
    for bad in ({"targets": ["q", "fc1"]}, {"shared_blocks": 0}, {"temperature": 0}, {"preset": "paper"}):
        with pytest.raises(ConfigError):
            strategy_config("cl_lora", bad)


def test_a_strategy_resumed_from_its_checkpoint_goes_on_exactly_as_the_original(three_tasks, backbone, stream,
                                                                                  tmp_path):
    """The runner's checkpoint after three tasks, loaded into a fresh strategy (`prepare_to_load` rebuilds the tasks'
    LoRA, block weights and teacher; the prototypes grow as they load): the same predictions, and after a fourth task
    trained from the same random state, the same tensors bit for bit."""
    reference = {f"backbone.{name}": value for name, value in backbone.model.state_dict().items()}
    original, path = copy.deepcopy(three_tasks["strategy"]), tmp_path / "checkpoint.pt"
    torch.manual_seed(7)
    save_checkpoint(path, "run", original, Progress(), reference)
    original.train_task(stream.tasks[3])
    resumed = build_strategy("cl_lora", FAST, copy.deepcopy(backbone.model), RUNTIME)
    assert resume(path, "run", resumed, reference) is not None
    images = as_tensors(stream.tasks[0].test)[0][:16]
    with torch.no_grad():
        assert torch.equal(resumed.eval().predict(images), three_tasks["strategy"].eval().predict(images))
    resumed.train_task(stream.tasks[3])
    state, expected = resumed.state_dict(), original.state_dict()
    assert state.keys() == expected.keys() and all(torch.equal(state[k], expected[k]) for k in state)
    assert [w.requires_grad for w in resumed.block_weights] == [False, False, False, True]
