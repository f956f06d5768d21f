"""Class statistics replayed in feature space: one Gaussian per class and task (the mean and covariance of the
features of the class's training images in that task), kept after the images are gone, and classifier alignment,
which re-trains a classifier on features drawn from every stored Gaussian. Shared by SLCA (GengDavid/SLCA@169d4e6
models/slca.py `_compute_mean`, `classifer_align`), MOS (sun-hailong/AAAI25-MOS@8d5e07c models/mos.py:198-333) and
TUNA (models/tuna.py:234-354), whose alignment loops are the same: each epoch draws `samples` features from every
Gaussian, shuffles them and takes batches of `samples` (the references' `num_sampled_pcls`), SGD with momentum, a
cosine lr annealed per epoch.

Statistics are computed in float64 and stored in float32 (the references sample in float32); a ridge of 1e-4 is
added to every variance, so that a class with fewer images than dimensions can be sampled. All Gaussians are sampled
at once from one batched distribution: the same distribution as the references' per-class loop, other draws.
"""

from __future__ import annotations

from typing import Callable, Iterable, Optional, Sequence

import torch
from torch import nn
from torch.distributions import Distribution, Independent, MultivariateNormal, Normal

from benchmark.runtime import Runtime
from strategies._loop import Loss, check_finite, run_epoch

COVARIANCES = ("full", "diagonal")
COVARIANCE_RIDGE = 1e-4


class ClassGaussians(nn.Module):
    """Buffers (checkpointed, counted in `params_added`): per Gaussian its mean, covariance (`full`) or variances
    (`diagonal`), output unit and the index of the task its statistics came from."""

    def __init__(self, dim: int, covariance: str = "full") -> None:
        super().__init__()
        if covariance not in COVARIANCES:
            raise ValueError(f"covariance {covariance!r}: use one of {COVARIANCES}")
        self.covariance = covariance
        self.register_buffer("means", torch.zeros(0, dim))
        self.register_buffer("spreads", torch.zeros((0, dim, dim) if covariance == "full" else (0, dim)))
        self.register_buffer("units", torch.zeros(0, dtype=torch.long))
        self.register_buffer("tasks", torch.zeros(0, dtype=torch.long))

    def __len__(self) -> int:
        return len(self.units)

    @torch.no_grad()
    def add(self, features: torch.Tensor, labels: torch.Tensor, units: Sequence[int], task_index: int) -> None:
        """Append one Gaussian per unit of `units`, from the rows of `features` with that label (in float64)."""
        features = features.double()
        means, spreads = [], []
        for unit in units:
            rows = features[labels == unit]
            means.append(rows.mean(0))
            if self.covariance == "full":
                ridge = COVARIANCE_RIDGE * torch.eye(rows.shape[1], dtype=rows.dtype, device=rows.device)
                spreads.append(torch.cov(rows.T) + ridge)
            else:
                spreads.append(rows.var(0) + COVARIANCE_RIDGE)
        added = torch.tensor(list(units), device=self.units.device)
        self.means = torch.cat([self.means, torch.stack(means).float().to(self.means.device)])
        self.spreads = torch.cat([self.spreads, torch.stack(spreads).float().to(self.spreads.device)])
        self.units = torch.cat([self.units, added])
        self.tasks = torch.cat([self.tasks, torch.full_like(added, task_index)])

    def distribution(self, shrink: Optional[torch.Tensor] = None) -> Distribution:
        """The stored Gaussians as one batched distribution, each mean multiplied by `shrink` (one factor per
        Gaussian) where given."""
        means = self.means if shrink is None else self.means * shrink[:, None].to(self.means.dtype)
        if self.covariance == "full":
            return MultivariateNormal(means, covariance_matrix=self.spreads)
        return Independent(Normal(means, self.spreads.sqrt()), 1)

    def growing_shrink(self, task_index: int) -> torch.Tensor:
        """SLCA's factors at task `task_index`: 0.9 + 0.1 (t_c + 1) / (task_index + 1) for a Gaussian of task t_c,
        so the oldest statistics are drawn closest to the origin."""
        return 0.9 + 0.1 * (self.tasks + 1).float() / (task_index + 1)

    @torch.no_grad()
    def sampled_batches(self, distribution: Distribution, samples: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """`samples` features per Gaussian with their units, shuffled, in batches of `samples` (one per Gaussian)."""
        drawn = distribution.sample((samples,))  # (samples, gaussians, dim)
        labels = self.units.expand(samples, -1)
        order = torch.randperm(drawn.shape[0] * drawn.shape[1], device=drawn.device)
        features, labels = drawn.reshape(-1, drawn.shape[-1])[order], labels.reshape(-1)[order]
        return list(zip(features.split(samples), labels.split(samples)))


    def align(self, loss: Loss, parameters: Iterable[nn.Parameter], samples: int, epochs: int, period: int, lr: float,
              momentum: float, weight_decay: float, runtime: Runtime, desc: str,
              shrink: Optional[torch.Tensor] = None) -> None:
        """Classifier alignment on the stored Gaussians (means multiplied by `shrink` where given): `align_classifier`
        on `samples` features per Gaussian drawn afresh every epoch."""
        distribution = self.distribution(shrink)
        align_classifier(loss, parameters, lambda: self.sampled_batches(distribution, samples), epochs, lr, momentum,
                         weight_decay, period, runtime, desc)


def align_classifier(loss: Loss, parameters: Iterable[nn.Parameter], draw: Callable[[], list], epochs: int,
                     lr: float, momentum: float, weight_decay: float, period: int, runtime: Runtime,
                     desc: str) -> None:
    """Train `parameters` for `epochs` on the batches `draw()` gives afresh every epoch (features sampled from
    stored Gaussians): SGD, lr `lr` * (1 + cos(pi e / period)) / 2 in epoch e (`CosineAnnealingLR(T_max=period)`
    stepped per epoch; a period shorter than `epochs` makes the lr rise again, as TUNA's T_max 5 over 30 epochs)."""
    optimizer = torch.optim.SGD(parameters, lr=lr, momentum=momentum, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=period)
    for epoch in runtime.bar(range(epochs), desc=desc):
        batches = draw()
        check_finite(run_epoch(loss, batches, optimizer, runtime), epoch, epoch * len(batches))
        schedule.step()
