"""Batched, gradient-free accuracy of a prediction function on tensors."""

from __future__ import annotations

from typing import Callable

import torch
from torch.utils.data import DataLoader, Dataset

from benchmark.runtime import Runtime

EVAL_BATCH = 512


def as_tensors(dataset: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """All (image, label) items of a data set as two tensors: decoded once, evaluated many times."""
    images, labels = [], []
    for batch in DataLoader(dataset, batch_size=EVAL_BATCH, shuffle=False):
        images.append(batch[0])
        labels.append(batch[1])
    return torch.cat(images), torch.cat(labels).long()


@torch.no_grad()
def accuracy(predict: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, labels: torch.Tensor,
             runtime: Runtime) -> float:
    """Top-1 accuracy (%) of `predict` (logits) over the given images; labels beyond the logits count as wrong."""
    correct = torch.zeros((), dtype=torch.long, device=runtime.device)
    for start in range(0, len(images), EVAL_BATCH):
        batch = images[start: start + EVAL_BATCH].to(runtime.device, non_blocking=True)
        with runtime.autocast():
            logits = predict(batch)
        target = labels[start: start + EVAL_BATCH].to(runtime.device, non_blocking=True)
        if logits.shape[1] > 0:
            correct += (logits.argmax(1) == target).sum()
    return 100.0 * int(correct) / len(images)
