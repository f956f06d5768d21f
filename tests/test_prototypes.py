"""Class prototypes and SimpleCIL: each class's row is the mean of the frozen features of its training images (by
hand, in numpy), logits are cosines to those rows, and nothing changes the backbone."""

import copy

import numpy as np
import torch

from benchmark.evaluation import as_tensors
from benchmark.runtime import Runtime
from strategies._prototypes import ClassPrototypes
from strategies.base import build_strategy

RUNTIME = Runtime.resolve("cpu", "fp32", progress=False)


def pretrained_features(backbone, images: torch.Tensor) -> np.ndarray:
    model = copy.deepcopy(backbone.model).eval()
    model.reset_classifier(0)
    with torch.no_grad():
        return model(images).double().numpy()


def test_simplecil_rows_are_per_class_mean_features_and_the_backbone_stays(backbone, stream):
    strategy = build_strategy("simplecil", {}, copy.deepcopy(backbone.model), RUNTIME)
    before = {k: v.clone() for k, v in strategy.backbone.state_dict().items()}
    for task in stream.tasks[:2]:
        strategy.train_task(task)
    images, labels = zip(*(as_tensors(task.train_unaugmented) for task in stream.tasks[:2]))
    features, labels = pretrained_features(backbone, torch.cat(images)), torch.cat(labels).numpy()
    expected = np.stack([features[labels == c].mean(0) for c in range(4)])
    np.testing.assert_allclose(strategy.prototypes.means.numpy(), expected, rtol=1e-5, atol=1e-6)
    assert all(torch.equal(v, before[k]) for k, v in strategy.backbone.state_dict().items())

    test_images, _ = as_tensors(stream.tasks[1].test)
    query = pretrained_features(backbone, test_images[:16])
    cosines = (query / np.linalg.norm(query, axis=1, keepdims=True)) @ \
        (expected / np.linalg.norm(expected, axis=1, keepdims=True)).T
    strategy.eval()
    with torch.no_grad():
        np.testing.assert_allclose(strategy.predict(test_images[:16]).numpy(), cosines, rtol=1e-4, atol=1e-5)


def test_a_class_seen_again_averages_over_all_its_images():
    """Domain-incremental: the row is the mean over every image of the class, whichever task brought it."""
    prototypes = ClassPrototypes(3)
    first, second = torch.randn(4, 3), torch.randn(6, 3)
    prototypes.add(first, torch.tensor([0, 0, 1, 1]), 2)
    prototypes.add(second, torch.tensor([0, 1, 1, 1, 1, 1]), 2)
    everything = torch.cat([first, second]).double()
    labels = torch.tensor([0, 0, 1, 1, 0, 1, 1, 1, 1, 1])
    expected = torch.stack([everything[labels == c].mean(0) for c in (0, 1)])
    assert torch.allclose(prototypes.means, expected)
    assert prototypes.counts.tolist() == [3, 7]
