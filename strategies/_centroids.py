"""Class statistics as a few diagonal Gaussians per class (k-means centroids of its features), and the replay of
samples drawn from them to align a classifier with every class seen so far: HiDe-Prompt's feature-statistics
replay (`ca_storage_efficient_method: multi-centroid`, thu-ml/HiDe-Prompt@0ed4333
engines/hide_promtp_wtp_and_tap_engine.py:369-525, the same in engines/hide_tii_engine.py:158-387).

For each class of a task: its features are split by k-means into `k` clusters (sklearn's `KMeans(n_clusters=10)`
there); each cluster keeps its mean and its per-dimension variance (population variance, float64). A sample of a
cluster is drawn from N(mean, diag(variance) + 1e-4 I); clusters of zero variance (a single image) are not sampled
(`if var.mean() == 0: continue`), but their means stay anchors of HiDe-Prompt's contrastive term.

Alignment (`align`): every epoch draws `per_centroid` samples from every stored cluster, shuffles them, and runs
`batches` SGD steps (momentum 0.9) on consecutive slices of `per_centroid` samples, cross-entropy over every output
unit, lr cosine-annealed per epoch (`CosineAnnealingLR(T_max=epochs)`); the reference's `batches` is the number of
classes of the earlier tasks, so an epoch sees part of the drawn samples.

Deviations: k-means is this module's own (Lloyd's algorithm from k-means++ seeds drawn from torch's generator, the
best of `restarts` runs by inertia), so a run is reproducible from its seed, where sklearn's `KMeans()` without a
`random_state` is not; sklearn 1.0.2 (the reference's) seeds greedily (several candidates per centre), stops at a
tolerance and moves a point into a cluster that empties, where here such a cluster keeps its centre and is dropped if
it ends empty. A class with fewer images than `k` gets at most one cluster per image (sklearn raises). Samples come from torch's generator as mean + sqrt(variance +
1e-4) z: the reference's distribution, other draws.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from benchmark.runtime import Runtime
from strategies._loop import check_finite, epoch_cosine, run_epoch

SAMPLING_RIDGE = 1e-4  # added to every variance when sampling (the reference's `+ 1e-4 * torch.eye(d)`)


def kmeans(points: torch.Tensor, k: int, restarts: int = 10, iterations: int = 300) -> torch.Tensor:
    """Cluster index (0, 1, ... without gaps) of every row of `points` (n, d) into at most k clusters: the best, by
    the sum of squared distances to the centres, of `restarts` runs of Lloyd's algorithm from k-means++ seeds, all
    run at once. A cluster left empty keeps its centre and, empty at the end, is dropped."""
    points = points.double()
    centres = _plus_plus_seeds(points, min(k, len(points)), restarts)
    labels = None
    for _ in range(iterations):
        new = torch.cdist(points.expand(restarts, -1, -1), centres).argmin(dim=2)  # (restarts, n)
        if labels is not None and torch.equal(new, labels):
            break
        labels = new
        members = F.one_hot(labels, centres.shape[1]).double()  # (restarts, n, k)
        counts = members.sum(dim=1)[..., None]
        centres = torch.where(counts > 0, members.transpose(1, 2) @ points / counts.clamp(min=1), centres)
    inertia = (points - centres.gather(1, labels[..., None].expand(-1, -1, points.shape[1]))).square().sum((1, 2))
    return torch.unique(labels[inertia.argmin()], return_inverse=True)[1]


def _plus_plus_seeds(points: torch.Tensor, k: int, restarts: int) -> torch.Tensor:
    """(restarts, k, d) k-means++ seeds: the first centre uniformly, each next one with probability proportional to
    the squared distance to the nearest centre chosen so far (uniformly where every point is a centre already)."""
    chosen = torch.randint(len(points), (restarts, 1))
    for _ in range(1, k):
        nearest = torch.cdist(points.expand(restarts, -1, -1), points[chosen]).min(dim=2).values.square().cpu()
        weights = torch.where(nearest.sum(dim=1, keepdim=True) > 0, nearest, torch.ones_like(nearest))
        chosen = torch.cat([chosen, torch.multinomial(weights.float(), 1)], dim=1)
    return points[chosen.to(points.device)]


class ClassCentroids(nn.Module):
    """Per cluster: mean and variance (float64), the output unit its samples are labelled with, and the task that
    stored it (buffers: checkpointed, counted in `params_added`)."""

    def __init__(self, dim: int, per_class: int) -> None:
        super().__init__()
        self.per_class = per_class
        self.register_buffer("means", torch.zeros(0, dim, dtype=torch.float64))
        self.register_buffer("variances", torch.zeros(0, dim, dtype=torch.float64))
        self.register_buffer("units", torch.zeros(0, dtype=torch.long))
        self.register_buffer("tasks", torch.zeros(0, dtype=torch.long))

    @torch.no_grad()
    def add(self, features: torch.Tensor, units: torch.Tensor, task_index: int) -> None:
        """Cluster the features of every unit present in `units` and store each cluster's statistics."""
        features = features.double()
        means, variances, owners = [], [], []
        for unit in torch.unique(units).tolist():
            members = features[units == unit]
            clusters = kmeans(members, self.per_class)
            for c in range(int(clusters.max()) + 1):
                cluster = members[clusters == c]
                means.append(cluster.mean(dim=0))
                variances.append(cluster.var(dim=0, unbiased=False))
                owners.append(unit)
        device = self.means.device
        self.means = torch.cat([self.means, torch.stack(means).to(device)])
        self.variances = torch.cat([self.variances, torch.stack(variances).to(device)])
        owners_tensor = torch.tensor(owners, dtype=torch.long, device=device)
        self.units = torch.cat([self.units, owners_tensor])
        self.tasks = torch.cat([self.tasks, torch.full_like(owners_tensor, task_index)])

    def anchors(self, before_task: Optional[int] = None) -> torch.Tensor:
        """The cluster means (float64), of the tasks before `before_task` when given."""
        return self.means if before_task is None else self.means[self.tasks < before_task]

    @torch.no_grad()
    def sample(self, per_centroid: int) -> tuple[torch.Tensor, torch.Tensor]:
        """`per_centroid` float32 draws from every cluster of non-zero variance, grouped by cluster, and their units."""
        kept = self.variances.mean(dim=1) > 0
        means, spreads = self.means[kept], (self.variances[kept] + SAMPLING_RIDGE).sqrt()
        noise = torch.randn(len(means), per_centroid, means.shape[1], dtype=torch.float64).to(means.device)
        samples = means[:, None] + spreads[:, None] * noise
        return samples.reshape(-1, means.shape[1]).float(), self.units[kept].repeat_interleave(per_centroid)


def replay_batches(centroids: ClassCentroids, per_centroid: int,
                   batches: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """One alignment epoch's data: fresh samples of every cluster, shuffled, the first `batches` slices of
    `per_centroid` (the reference's loop over `crct_num` slices)."""
    features, units = centroids.sample(per_centroid)
    order = torch.randperm(len(units)).to(units.device)
    features, units = features[order], units[order]
    return [(features[i * per_centroid: (i + 1) * per_centroid], units[i * per_centroid: (i + 1) * per_centroid])
            for i in range(batches) if i * per_centroid < len(units)]


def align(classifier: nn.Module, centroids: ClassCentroids, *, per_centroid: int, batches: int, lr: float,
          epochs: int, runtime: Runtime, desc: str) -> None:
    """Train `classifier` (features -> logits over every unit) on replayed samples: SGD, momentum 0.9, no weight
    decay (the reference's parameter group sets `weight_decay` to its parser's 0.0 over the optimiser's 5e-4), lr
    cosine-annealed per epoch."""
    optimizer = torch.optim.SGD([p for p in classifier.parameters() if p.requires_grad], lr=lr, momentum=0.9)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: epoch_cosine(epoch, epochs))
    loss = lambda x, y: F.cross_entropy(classifier(x), y)  # noqa: E731
    for epoch in runtime.bar(range(epochs), desc=desc):
        data = replay_batches(centroids, per_centroid, batches)
        check_finite(run_epoch(loss, data, optimizer, runtime), epoch, epoch * batches)
        schedule.step()
