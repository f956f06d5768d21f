"""TUNA: the lowest-entropy selection by hand, the universal adapter as the EMR merge written out in numpy, the
inference as softmax(universal) + softmax(selected set) from each set's features, the orthogonality term and the
alignment's periodic cosine against their formulas."""

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from benchmark.evaluation import as_tensors
from benchmark.runtime import Runtime
from strategies._gaussians import align_classifier
from strategies.base import build_strategy
from strategies.tuna import lowest_entropy

RUNTIME = Runtime.resolve("cpu", "fp32", progress=False)
CHEAP = {"epochs": 1, "batch_size": 32, "ca_epochs": 1, "ca_samples": 16}


@pytest.fixture(scope="module")
def tuna(backbone, stream):
    torch.manual_seed(0)
    strategy = build_strategy("tuna", CHEAP, copy.deepcopy(backbone.model), RUNTIME)
    for task in stream.tasks[:3]:
        strategy.train_task(task)
    return strategy.eval()


def test_lowest_entropy_by_hand():
    logits = torch.tensor([[[5.0, 0.0, 0.0], [0.0, 0.0, 0.0], [1.0, 2.0, 3.0]],  # set 0
                           [[1.0, 1.0, 0.0], [0.0, 3.0, 0.0], [1.0, 2.0, 3.0]]])  # set 1
    # image 0: set 0 peaked; image 1: set 0 uniform (entropy log 3), set 1 peaked; image 2: a tie -> the first
    assert lowest_entropy(logits).tolist() == [0, 1, 0]


def reference_emr(tensors: list[np.ndarray]) -> np.ndarray:
    """backbone/vit_tuna.py:82-115 entry by entry: flag = sign of the mean (0 -> -1), the largest |value| among the
    tensors whose value has that sign."""
    stacked = np.stack(tensors)
    out = np.zeros_like(stacked[0])
    for index in np.ndindex(out.shape):
        values = stacked[(slice(None), *index)]
        flag = 1.0 if values.mean() > 0 else -1.0
        out[index] = flag * max([abs(v) for v in values if v * flag > 0], default=0.0)
    return out


def test_the_universal_adapter_is_the_emr_merge_of_every_task_set(tuna):
    states = [tuna.bank.sets[i].state_dict() for i in range(3)]
    universal = tuna.universal.sets[0].state_dict()
    for name in ("0.down.weight", "1.up.weight", "1.up.bias"):
        expected = reference_emr([state[name].numpy() for state in states])
        assert np.allclose(universal[name].numpy(), expected, atol=1e-7)
    assert not any(p.requires_grad for p in [*tuna.bank.sets[:2].parameters(), *tuna.universal.parameters()])


def cosines(features: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    return 20 * F.normalize(features, dim=1) @ F.normalize(rows, dim=1).T


def test_inference_adds_the_universal_softmax_to_the_lowest_entropy_sets(tuna, stream):
    images = torch.cat([as_tensors(task.test)[0][:8] for task in stream.tasks[:3]])
    rows = tuna.head.weight.detach()
    with torch.no_grad():
        specific = [cosines(tuna.bank.features(tuna.backbone, images, j), rows) for j in range(3)]
        universal = cosines(tuna.universal.features(tuna.backbone, images, 0), rows)
        logits, chosen = tuna.predict(images), tuna.selected_task(images)
    entropies = np.stack([-(F.softmax(s, 1) * torch.log(F.softmax(s, 1) + 1e-10)).sum(1).numpy() for s in specific])
    assert np.array_equal(chosen.numpy(), entropies.argmin(0))
    selected = torch.stack([specific[int(c)][n] for n, c in enumerate(chosen)])
    assert torch.allclose(logits, F.softmax(universal, 1) + F.softmax(selected, 1), atol=1e-5)

    configured = tuna.config
    tuna.config = copy.copy(configured)
    object.__setattr__(tuna.config, "universal", "latest")  # the released code: the newest task set
    try:
        with torch.no_grad():
            assert torch.equal(tuna.features(images), tuna.bank.features(tuna.backbone, images, 2))
    finally:
        tuna.config = configured


def test_orthogonality_term_is_the_mean_absolute_overlap_of_the_up_projections(tuna):
    up = [[F.normalize(adapter.up.weight, dim=1).detach().numpy() for adapter in tuna.bank.sets[i]] for i in range(3)]
    expected = sum(np.mean([abs((mine @ theirs.T).mean()) for mine, theirs in zip(up[2], up[i])]) for i in range(2))
    assert math.isclose(float(tuna.up_projection_overlap(2).detach()), expected, rel_tol=1e-5)


def test_alignment_lr_follows_a_cosine_of_period_five_that_rises_again():
    """One batch per epoch, loss = the parameter: each epoch moves it by exactly that epoch's lr."""
    parameter = nn.Parameter(torch.zeros(()))
    trace = []
    batches = lambda: (trace.append(float(parameter.detach())), [(torch.zeros(1), torch.zeros(1))])[1]  # noqa: E731
    align_classifier(lambda f, y: parameter * 1.0, [parameter], batches, epochs=12, lr=1.0, momentum=0.0,
                     weight_decay=0.0, period=5, runtime=RUNTIME, desc="test")
    trace.append(float(parameter.detach()))
    lrs = -np.diff(trace)
    expected = [(1 + math.cos(math.pi * epoch / 5)) / 2 for epoch in range(12)]  # 1 ... 0 at 5 ... 1 at 10
    assert np.allclose(lrs, expected, atol=1e-6)
