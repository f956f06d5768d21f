"""EASE: one frozen adapter set per task; its prototypes are class means in every subspace where the class has
images, the complement elsewhere (the reference's double loop over old tasks and later subspaces, written in numpy
here), and its logits weight a class's own subspace by 1 and the others by alpha / t (`forward_reweight` in numpy)."""

import copy
import math

import numpy as np
import pytest
import torch

from benchmark.evaluation import as_tensors
from benchmark.runtime import Runtime
from strategies._prototypes import complement
from strategies.base import build_strategy

RUNTIME = Runtime.resolve("cpu", "fp32", progress=False)


def softmax(row: np.ndarray) -> np.ndarray:
    exp = np.exp(row - row.max())
    return exp / exp.sum()


def cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_complement_by_hand():
    own, anchors = torch.tensor([[1.0, 0.0]]), torch.tensor([[2.0, 0.0], [0.0, 3.0]])  # cosines 1 and 0
    targets = torch.tensor([[2.0, 0.0], [0.0, 4.0]])
    weight = math.e / (math.e + 1)  # softmax([1, 0])[0]
    assert torch.allclose(complement(own, anchors, targets), torch.tensor([[2 * weight, 4 * (1 - weight)]]))


@pytest.fixture(scope="module")
def ease(backbone, stream):
    """EASE after three tasks (alpha 0.3), with its first two sets as they were after the second task."""
    torch.manual_seed(0)
    strategy = build_strategy("ease", {"epochs": 1, "batch_size": 32, "alpha": 0.3}, copy.deepcopy(backbone.model),
                              RUNTIME)
    for task in stream.tasks[:2]:
        strategy.train_task(task)
    kept = copy.deepcopy(strategy.bank.sets.state_dict())
    strategy.train_task(stream.tasks[2])
    strategy.eval()
    return strategy, kept


def reference_complement(weights: np.ndarray, task_classes: list[list[int]]) -> np.ndarray:
    """models/ease.py `solve_sim_reset` (use_init_ptm false): for each old task i and later subspace j, the rows of
    task i's classes in subspace j become softmax_k(cos(A_hat_c, A_k)) @ B, A and B the subspace-i and subspace-j
    rows of the classes of tasks j..t, A_hat task i's rows in subspace i; two loops, as there."""
    weights = weights.copy()
    last = len(task_classes) - 1
    for old in range(last):
        for later in range(old + 1, last + 1):
            others = [c for task in task_classes[later:] for c in task]
            for c in task_classes[old]:
                similarity = softmax(np.array([cos(weights[c, old], weights[k, old]) for k in others]))
                weights[c, later] = sum(s * weights[k, later] for s, k in zip(similarity, others))
    return weights


def test_each_task_adds_a_frozen_set_and_old_classes_get_the_references_complement(ease, stream):
    strategy, kept = ease
    trainable = [any(p.requires_grad for p in adapters.parameters()) for adapters in strategy.bank.sets]
    assert trainable == [False, False, True]  # only the newest set trains (and is what `params_trainable` counts)
    assert all(torch.equal(v, strategy.bank.sets.state_dict()[k]) for k, v in kept.items())  # sets 0 and 1 kept

    task_classes = [list(task.labels) for task in stream.tasks[:3]]
    real = np.zeros((6, 3, strategy.feature_dim))
    for index, task in enumerate(stream.tasks[:3]):
        images, labels = as_tensors(task.train_unaugmented)
        for subspace in range(index + 1):  # task `index`'s classes have images in subspaces 0..index
            with torch.no_grad():
                features = strategy.bank.features(strategy.backbone, images, subspace).double().numpy()
            for c in task.labels:
                real[c, subspace] = features[labels.numpy() == c].mean(0)
    classifier = strategy.classifier.double().numpy()
    for index, classes in enumerate(task_classes):
        assert np.allclose(classifier[classes, : index + 1], real[classes, : index + 1], atol=1e-5)
    assert np.allclose(classifier, reference_complement(real, task_classes), atol=1e-5)
    assert not np.allclose(classifier[task_classes[0], 2], 0)  # the complement filled the empty blocks


def test_logits_weight_the_own_subspace_by_one_and_the_others_by_alpha_over_t(ease, stream):
    strategy, _ = ease
    images = torch.cat([as_tensors(task.test)[0][:4] for task in stream.tasks[:3]])
    with torch.no_grad():
        logits = strategy.predict(images).numpy()
        every = [strategy.bank.features(strategy.backbone, images, j).numpy() for j in range(3)]
    classifier, t = strategy.classifier.numpy(), 2
    expected = np.zeros_like(logits)
    for own, task in enumerate(stream.tasks[:3]):  # `forward_reweight`: a class of task i, subspaces j
        for c in task.labels:
            for n in range(len(images)):
                expected[n, c] = sum((1.0 if j == own else 0.3 / t) * cos(every[j][n], classifier[c, j])
                                     for j in range(3))
    assert np.allclose(logits, expected, atol=1e-5)


def test_features_are_the_newest_sets_and_a_fresh_strategy_is_the_pretrained_network(ease, stream, backbone):
    strategy, _ = ease
    images = as_tensors(stream.tasks[0].test)[0][:3]
    with torch.no_grad():
        assert torch.equal(strategy.features(images), strategy.bank.features(strategy.backbone, images, 2))
        fresh = build_strategy("ease", {}, copy.deepcopy(backbone.model), RUNTIME).eval()
        assert fresh.predict(images).shape == (3, 0)
        assert torch.allclose(fresh.features(images), strategy.bank.features(strategy.backbone, images, None))
