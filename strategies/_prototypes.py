"""Class prototypes: each class's mean feature over its training images, and the cosine classifier on them
(SimpleCIL, APER, EASE, MOS; LAMDA-PILOT `replace_fc` + `CosineLinear`); and EASE's prototype complement, which gives
a class a prototype in a feature space where it has no images.

The means are kept as per-class sums and counts (float64), so that a class seen again in a later task (a
domain-incremental stream) gets the mean over all of its images so far; in a class-incremental stream each class
appears in one task and its row is exactly that task's mean, as in the reference.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from benchmark.runtime import Runtime
from strategies._loop import precompute


def cosine_logits(features: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """cos(features_i, weight_c) for every image i and class c (both sides L2-normalised)."""
    return F.linear(F.normalize(features, dim=1), F.normalize(weight, dim=1))


def complement(own: torch.Tensor, anchors: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """EASE's semantic-guided mapping (sun-hailong/CVPR24-Ease@6d67508 models/ease.py:176-226): prototypes for m
    classes in a space where they have no images, as softmax_k(cos(own_i, anchors_k)) @ targets. `own` (m, d): the
    classes' prototypes in a space where they have images; `anchors` (k, d): the prototypes there of k classes that
    also have images in the target space; `targets` (k, d): those k classes' prototypes in the target space. The
    softmax is over the plain cosines, without temperature, as the reference's."""
    return torch.softmax(cosine_logits(own, anchors), dim=1) @ targets


def task_features(transform: Callable[[torch.Tensor], torch.Tensor], data: Dataset, runtime: Runtime,
                  key: Optional[str] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(transform(image), label) of every item of `data` as two tensors on the strategy's device, computed once
    without autograd through the shared `precompute` (with a frozen `transform`'s `key`: shared across runs)."""
    computed = precompute(transform, data, runtime, key)
    if computed is None:
        raise RuntimeError("a task's features do not fit in memory (benchmark.evaluation.IN_MEMORY_LIMIT_BYTES); "
                           "use a smaller task or raise the limit")
    features, labels = computed.tensors
    return features.to(runtime.device), labels.to(runtime.device)


class ClassPrototypes(nn.Module):
    """Per-class feature sums and image counts (buffers: stored, checkpointed, counted in `params_added`)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("sums", torch.zeros(0, dim, dtype=torch.float64))
        self.register_buffer("counts", torch.zeros(0, dtype=torch.float64))

    @property
    def num_outputs(self) -> int:
        return self.sums.shape[0]

    @torch.no_grad()
    def add(self, features: torch.Tensor, labels: torch.Tensor, num_outputs: int) -> None:
        """Add these images to their classes' sums, growing to `num_outputs` classes."""
        grow = num_outputs - self.num_outputs
        if grow > 0:
            self.sums = torch.cat([self.sums, self.sums.new_zeros(grow, self.sums.shape[1])])
            self.counts = torch.cat([self.counts, self.counts.new_zeros(grow)])
        self.sums.index_add_(0, labels, features.to(self.sums.dtype))
        self.counts.index_add_(0, labels, torch.ones_like(labels, dtype=self.counts.dtype))

    @property
    def means(self) -> torch.Tensor:
        """Each class's mean feature (zero for a class without images yet)."""
        return self.sums / self.counts.clamp(min=1)[:, None]

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Cosine logits against every class's mean, in float32 even under autocast (bf16 would round nearly equal
        cosines together)."""
        with torch.autocast(features.device.type, enabled=False):
            return cosine_logits(features.float(), self.means.float())
