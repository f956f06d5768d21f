"""Class statistics as k-means centroids and their replay (strategies/_centroids.py): the clusters k-means finds on
well-separated blobs, the stored means and variances against a brute-force computation per cluster, samples whose
mean and variance are the stored ones (plus the sampling ridge), and one alignment step against the gradient of
the cross-entropy written out in numpy."""

import numpy as np
import pytest
import torch
from torch import nn

from benchmark.runtime import Runtime
from strategies._centroids import SAMPLING_RIDGE, ClassCentroids, align, kmeans, replay_batches

RUNTIME = Runtime.resolve("cpu", "fp32", progress=False)


def blobs(centres: list[list[float]], per_blob: int, spread: float, seed: int = 0) -> tuple[torch.Tensor, np.ndarray]:
    """`per_blob` points around each centre (uniform noise of half-width `spread`), shuffled; and each one's blob."""
    rng = np.random.default_rng(seed)
    points = np.concatenate([np.asarray(c) + rng.uniform(-spread, spread, (per_blob, len(c))) for c in centres])
    owner = np.repeat(np.arange(len(centres)), per_blob)
    order = rng.permutation(len(points))
    return torch.tensor(points[order]), owner[order]


def partition(labels) -> set[frozenset[int]]:
    """The clustering as a set of index sets (independent of how clusters are numbered)."""
    labels = np.asarray(labels)
    return {frozenset(np.flatnonzero(labels == c).tolist()) for c in np.unique(labels)}


def test_kmeans_finds_well_separated_blobs_and_never_more_clusters_than_points():
    torch.manual_seed(0)
    points, owner = blobs([[0, 0, 0], [10, 0, 0], [0, 10, 5]], per_blob=15, spread=1.0)
    assert partition(kmeans(points, 3).numpy()) == partition(owner)
    assert sorted(kmeans(points[:2], 5).tolist()) == [0, 1]  # two points, two clusters
    same = torch.ones(6, 3, dtype=torch.float64)
    assert kmeans(same, 3).tolist() == [0] * 6  # identical points: the clusters left empty are dropped


def test_stored_statistics_are_each_clusters_mean_and_population_variance():
    torch.manual_seed(0)
    points, owner = blobs([[0, 0], [8, 8]], per_blob=12, spread=1.0)
    single = torch.tensor([[3.0, -4.0]], dtype=torch.float64)  # a class of one image: one cluster, variance 0
    features = torch.cat([points, single])
    units = torch.tensor([5] * len(points) + [7])
    store = ClassCentroids(dim=2, per_class=2)
    store.add(features.float(), units, task_index=3)
    assert store.units.tolist() == [5, 5, 7] and store.tasks.tolist() == [3, 3, 3]
    expected = sorted((points.numpy()[owner == b].mean(0).tolist(), points.numpy()[owner == b].var(0).tolist())
                      for b in (0, 1))
    stored = sorted((m.tolist(), v.tolist()) for m, v in zip(store.means[:2], store.variances[:2]))
    for (mean, var), (their_mean, their_var) in zip(stored, expected):
        assert np.allclose(mean, their_mean, atol=1e-6) and np.allclose(var, their_var, atol=1e-6)
    assert store.means[2].tolist() == [3.0, -4.0] and store.variances[2].tolist() == [0.0, 0.0]
    assert store.anchors(before_task=3).shape == (0, 2) and store.anchors(before_task=4).shape == (3, 2)


def test_samples_have_the_stored_mean_and_variance_plus_the_ridge():
    store = ClassCentroids(dim=3, per_class=1)
    store.means = torch.tensor([[1.0, -2.0, 0.5], [0.0, 0.0, 9.0], [4.0, 4.0, 4.0]], dtype=torch.float64)
    store.variances = torch.tensor([[0.25, 4.0, 1e-3], [1.0, 1.0, 1.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    store.units, store.tasks = torch.tensor([2, 0, 1]), torch.tensor([0, 0, 0])
    torch.manual_seed(0)
    n = 40_000
    samples, units = store.sample(n)
    assert samples.dtype == torch.float32 and samples.shape == (2 * n, 3)  # the zero-variance cluster is skipped
    assert units.tolist() == [2] * n + [0] * n
    for i, drawn in enumerate(samples.double().split(n)):
        variance = store.variances[i] + SAMPLING_RIDGE
        assert torch.all((drawn.mean(0) - store.means[i]).abs() < 5 * (variance / n).sqrt())
        assert torch.allclose(drawn.var(0), variance, rtol=0.03)


def test_replay_batches_slice_shuffled_samples():
    store = ClassCentroids(dim=2, per_class=1)
    store.means = torch.tensor([[0.0, 0.0], [5.0, 5.0]], dtype=torch.float64)
    store.variances = torch.full((2, 2), 0.5, dtype=torch.float64)
    store.units, store.tasks = torch.tensor([0, 1]), torch.tensor([0, 1])
    torch.manual_seed(0)
    batches = replay_batches(store, per_centroid=4, batches=3)
    assert [len(x) for x, _ in batches] == [4, 4]  # 8 samples make only two slices of 4
    assert sorted(torch.cat([y for _, y in batches]).tolist()) == [0] * 4 + [1] * 4


def test_one_alignment_step_is_sgd_on_the_cross_entropy_of_the_replayed_batch():
    """SGD with momentum takes the plain gradient step first: W <- W - lr (softmax(XW^T + b) - Y)^T X / n."""
    store = ClassCentroids(dim=3, per_class=1)
    store.means = torch.tensor([[1.0, 0.0, -1.0], [0.0, 2.0, 1.0]], dtype=torch.float64)
    store.variances = torch.full((2, 3), 0.3, dtype=torch.float64)
    store.units, store.tasks = torch.tensor([0, 1]), torch.tensor([0, 0])
    torch.manual_seed(1)
    head = nn.Linear(3, 2)
    weight, bias = head.weight.detach().double().numpy(), head.bias.detach().double().numpy()
    torch.manual_seed(7)
    (x, y), = replay_batches(store, per_centroid=5, batches=1)
    torch.manual_seed(7)
    align(head, store, per_centroid=5, batches=1, lr=0.3, epochs=1, runtime=RUNTIME, desc="test")
    x, y = x.double().numpy(), np.eye(2)[y.numpy()]
    logits = x @ weight.T + bias
    softmax = np.exp(logits - logits.max(1, keepdims=True))
    softmax /= softmax.sum(1, keepdims=True)
    residual = (softmax - y) / len(x)
    assert np.allclose(head.weight.detach().numpy(), weight - 0.3 * residual.T @ x, atol=1e-6)
    assert np.allclose(head.bias.detach().numpy(), bias - 0.3 * residual.sum(0), atol=1e-6)


@pytest.mark.parametrize("k", [1, 4, 9])
def test_clusters_are_numbered_without_gaps_and_are_local_optima(k):
    """Every point is nearest to its own cluster's mean (Lloyd's fixed point), clusters numbered 0 .. c - 1."""
    torch.manual_seed(3)
    points = torch.randn(9, 4, dtype=torch.float64)
    labels = kmeans(points, k)
    clusters = sorted(set(labels.tolist()))
    assert clusters == list(range(len(clusters))) and len(clusters) <= k
    means = torch.stack([points[labels == c].mean(0) for c in clusters])
    assert torch.equal(torch.cdist(points, means).argmin(1), labels)
