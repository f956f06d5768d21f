"""Batched, gradient-free evaluation on tensors: accuracy of a prediction function, features of a feature map."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch.utils.data import DataLoader, Dataset

from benchmark.runtime import Runtime

EVAL_BATCH = 512
Fn = Callable[[torch.Tensor], torch.Tensor]


def as_tensors(dataset: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """All (image, label) items of a data set as two tensors: decoded once, evaluated many times."""
    images, labels = [], []
    for batch in DataLoader(dataset, batch_size=EVAL_BATCH, shuffle=False, generator=torch.Generator()):
        images.append(batch[0])
        labels.append(batch[1])
    return torch.cat(images), torch.cat(labels).long()


@torch.no_grad()
def apply(fn: Fn, images: torch.Tensor, runtime: Runtime, reduce: Fn = lambda out: out.float()) -> torch.Tensor:
    """`reduce(fn(batch))` over all images in full batches, concatenated on the runtime's device."""
    outputs = []
    for start in range(0, len(images), EVAL_BATCH):
        with runtime.autocast():
            outputs.append(reduce(fn(images[start: start + EVAL_BATCH].to(runtime.device, non_blocking=True))))
    return torch.cat(outputs)


def predicted_labels(logits: torch.Tensor) -> torch.Tensor:
    """argmax of each row; -1 (never a label) when there are no logits yet."""
    if logits.shape[1] == 0:
        return torch.full((len(logits),), -1, dtype=torch.long, device=logits.device)
    return logits.argmax(1)


@dataclass(frozen=True)
class TestSets:
    """Several test sets scored as one: concatenated once, predicted in full batches (a stream's small per-task sets
    would otherwise make many small batches), accuracy split per set."""

    images: torch.Tensor
    labels: torch.Tensor
    sizes: tuple[int, ...]

    @classmethod
    def of(cls, datasets: Sequence[Dataset]) -> "TestSets":
        pairs = [as_tensors(dataset) for dataset in datasets]
        return cls(torch.cat([x for x, _ in pairs]), torch.cat([y for _, y in pairs]), tuple(len(y) for _, y in pairs))

    def accuracies(self, predict: Fn, runtime: Runtime) -> list[float]:
        """Top-1 accuracy (%) of `predict` (logits) on each set; labels beyond the logits count as wrong."""
        correct = (apply(predict, self.images, runtime, predicted_labels).cpu() == self.labels).float()
        return [100.0 * float(part.mean()) for part in correct.split(list(self.sizes))]


    def task_aware_accuracies(self, predict: Callable[..., torch.Tensor], runtime: Runtime) -> list[float]:
        """Accuracy (%) on each set j of `predict(x, task_id=j)`: the task identity given at test time."""
        starts = [sum(self.sizes[:j]) for j in range(len(self.sizes))]
        return [accuracy(lambda x, j=j: predict(x, task_id=j), self.images[start: start + size],
                         self.labels[start: start + size], runtime)
                for j, (start, size) in enumerate(zip(starts, self.sizes))]


def accuracy(predict: Fn, images: torch.Tensor, labels: torch.Tensor, runtime: Runtime) -> float:
    """Top-1 accuracy (%) of `predict` (logits) on one set."""
    return TestSets(images, labels, (len(labels),)).accuracies(predict, runtime)[0]


def embed(features: Fn, images: torch.Tensor, runtime: Runtime) -> torch.Tensor:
    """`features` of every image, as one float tensor on the runtime's device."""
    return apply(features, images, runtime)
