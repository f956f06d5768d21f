"""MOS: the merge is the EMA formula (a hand case, and m = 1 makes a trained set the earlier sets' mean after every
step), the InfoNCE term a hand case, and the self-refined retrieval the reference's per-image loop written out here,
on every set's features."""

import copy
import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from benchmark.evaluation import as_tensors
from benchmark.runtime import Runtime
from strategies.base import build_strategy

RUNTIME = Runtime.resolve("cpu", "fp32", progress=False)
CHEAP = {"epochs": 1, "batch_size": 32, "ca_epochs": 1, "ca_samples": 16}


def build(backbone, **params):
    torch.manual_seed(0)
    return build_strategy("mos", {**CHEAP, **params}, copy.deepcopy(backbone.model), RUNTIME)


@pytest.fixture(scope="module")
def mos(backbone, stream):
    strategy = build(backbone)
    for task in stream.tasks[:3]:
        strategy.train_task(task)
    return strategy.eval()


def test_merge_is_the_ema_of_the_earlier_sets(backbone):
    strategy = build(backbone)
    for value in (1.0, 3.0, 10.0):
        with torch.no_grad():
            for parameter in strategy.bank.add().parameters():
                parameter.fill_(value)
    strategy.merge(2)
    # (1 - 0.1) * 10 + 0.1 * mean(1, 3) = 9.2; the earlier sets stay
    assert all(torch.allclose(p, torch.full_like(p, 9.2)) for p in strategy.bank.sets[2].parameters())
    assert all(torch.equal(p, torch.full_like(p, 3.0)) for p in strategy.bank.sets[1].parameters())


def test_with_momentum_one_every_step_ends_on_the_earlier_sets_mean(backbone, stream):
    strategy = build(backbone, merge_momentum=1.0)
    strategy.train_task(stream.tasks[0])
    first = copy.deepcopy(strategy.bank.sets[0].state_dict())
    assert any(v.abs().sum() > 0 for k, v in first.items() if ".up." in k)  # task 0 trained (no merge there)
    strategy.train_task(stream.tasks[1])
    assert all(torch.allclose(v, first[k]) for k, v in strategy.bank.sets[1].state_dict().items())


def test_contrastive_term_by_hand(backbone):
    strategy = build(backbone)
    strategy.statistics.means = torch.tensor([[1.0, 0.0]])
    features = torch.tensor([[0.0, 1.0]])
    # M = I (2 x 2), M M^T / 0.8 = 1.25 I: each row's cross-entropy is log(1 + e^-1.25)
    assert torch.allclose(strategy.contrastive(features), torch.tensor(math.log(1 + math.exp(-1.25))))


def reference_retrieval(first: np.ndarray, per_set: list[np.ndarray], task_of: list[int], steps: int):
    """models/mos.py:376-396 per image: the prototype prediction's task, then up to `steps` head look-ups, following
    the predicted class's task until it stays the same."""
    chosen, logits = [], []
    for n in range(len(first)):
        previous = task_of[int(first[n].argmax())]
        loops = 0
        while True:
            loops += 1
            current = per_set[previous][n]
            proposed = task_of[int(current.argmax())]
            if loops >= steps or proposed == previous:
                break
            previous = proposed
        chosen.append(previous)
        logits.append(current)
    return np.array(chosen), np.stack(logits)


def test_retrieval_and_ensemble_are_the_references(mos, stream):
    images = torch.cat([as_tensors(task.test)[0][:12] for task in stream.tasks[:3]])
    task_of = [0, 0, 1, 1, 2, 2]
    with torch.no_grad():
        every = [mos.bank.features(mos.backbone, images, j) for j in range(3)]
        head = [mos.head(features).numpy() for features in every]
        first = F.normalize(every[0], dim=1) @ F.normalize(mos.prototypes.means.float(), dim=1).T  # sigma 1
        logits, chosen = mos.predict(images), mos.selected_task(images)
    expected_chosen, refined = reference_retrieval(first.numpy(), head, task_of, steps=4)
    assert np.array_equal(chosen.numpy(), expected_chosen) and len(set(chosen.tolist())) > 1
    ensemble = F.softmax(torch.from_numpy(refined), 1) + F.softmax(3 * first, 1)  # (t + 1) x the prototype logits
    assert torch.allclose(logits, ensemble.float(), atol=1e-5)

    configured = mos.config
    mos.config = dataclasses.replace(configured, refine_steps=1, ensemble=False)
    try:
        with torch.no_grad():
            one_lookup, plain = mos.selected_task(images), mos.predict(images)
    finally:
        mos.config = configured
    expected_chosen, refined = reference_retrieval(first.numpy(), head, task_of, steps=1)
    assert np.array_equal(one_lookup.numpy(), expected_chosen)  # the prototype prediction's task, not refined
    assert np.allclose(plain.numpy(), refined, atol=1e-5)


def test_the_head_and_statistics_cover_the_seen_classes(mos):
    assert mos.head.num_outputs == 6 and mos.class_tasks.tolist() == [0, 0, 1, 1, 2, 2]
    assert mos.statistics.units.tolist() == list(range(6)) and mos.statistics.tasks.tolist() == [0, 0, 1, 1, 2, 2]
    assert [any(p.requires_grad for p in adapters.parameters()) for adapters in mos.bank.sets] == [False, False, True]
