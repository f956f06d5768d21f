"""Batched, gradient-free evaluation: accuracy of a prediction function, features of a feature map.

Images are either a tensor in memory (small test sets: decoded once, evaluated after every task) or a Dataset read
in batches by the runtime's loader workers on every pass (large ones: CIFAR-100's test split at 224 px is 6 GB of
floats). `TestSets.of` picks by size, against IN_MEMORY_LIMIT_BYTES.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Optional, Sequence, Union

import torch
from torch.utils.data import ConcatDataset, DataLoader, Dataset, Subset

from benchmark.runtime import Runtime
from benchmark.sharing import memoised

LOAD_BATCH = 512  # items per loader batch when a data set is turned into tensors
IN_MEMORY_LIMIT_BYTES = 2 * 2**30  # decoded images kept in memory at most (test sets, cached frozen-prefix outputs)
Fn = Callable[[torch.Tensor], torch.Tensor]
Images = Union[torch.Tensor, Dataset]  # a tensor of images, or a Dataset of (image, label) items


def as_tensors(dataset: Dataset, runtime: Optional[Runtime] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """All (image, label) items of a data set as two tensors: decoded once (by the runtime's loader workers, if
    given), evaluated many times."""
    options = runtime.loader_options(dataset, persistent=False) if runtime else {}
    images, labels = [], []
    for batch in DataLoader(dataset, batch_size=LOAD_BATCH, shuffle=False, generator=torch.Generator(), **options):
        images.append(batch[0])
        labels.append(batch[1])
    return torch.cat(images), torch.cat(labels).long()


def labels_of(dataset: Dataset) -> torch.Tensor:
    """Every item's label, from the `targets` Avalanche and torchvision data sets carry (no image is decoded)."""
    return torch.as_tensor(list(dataset.targets), dtype=torch.long)


def fits_in_memory(dataset: Dataset) -> bool:
    """Whether all of `dataset`'s images, decoded, take at most IN_MEMORY_LIMIT_BYTES (judged by the first)."""
    return len(dataset) == 0 or dataset[0][0].nbytes * len(dataset) <= IN_MEMORY_LIMIT_BYTES


def decoded_if_small(dataset: Dataset, runtime: Optional[Runtime] = None) -> Images:
    """The images of `dataset` as one tensor when they fit in memory, else the data set itself (read per pass)."""
    return as_tensors(dataset, runtime)[0] if fits_in_memory(dataset) else dataset


def image_batches(images: Images, runtime: Runtime) -> Iterator[torch.Tensor]:
    """`images` in batches of `runtime.eval_batch`, in order, on the runtime's device."""
    if isinstance(images, torch.Tensor):
        batches: Iterator[torch.Tensor] = (images[start: start + runtime.eval_batch]
                                           for start in range(0, len(images), runtime.eval_batch))
    else:  # a generator of its own: a pass must not draw from the global RNG (a shared pass that is skipped would not)
        loader = DataLoader(images, batch_size=runtime.eval_batch, shuffle=False, generator=torch.Generator(),
                            **runtime.loader_options(images, persistent=False))
        batches = (batch[0] for batch in loader)
    for batch in batches:
        yield batch.to(runtime.device, non_blocking=True)


@torch.no_grad()
def apply(fn: Fn, images: Images, runtime: Runtime, reduce: Fn = lambda out: out.float()) -> torch.Tensor:
    """`reduce(fn(batch))` over all images in full batches, concatenated on the runtime's device."""
    outputs = []
    for batch in image_batches(images, runtime):
        with runtime.autocast():
            outputs.append(reduce(fn(batch)))
    return torch.cat(outputs)


def predicted_labels(logits: torch.Tensor) -> torch.Tensor:
    """argmax of each row; -1 (never a label) when there are no logits yet."""
    if logits.shape[1] == 0:
        return torch.full((len(logits),), -1, dtype=torch.long, device=logits.device)
    return logits.argmax(1)


@dataclass(frozen=True)
class TestSets:
    """Several test sets scored as one: concatenated once, predicted in full batches (a stream's small per-task sets
    would otherwise make many small batches), accuracy split per set. Images in memory when they fit."""

    images: Images
    labels: torch.Tensor
    sizes: tuple[int, ...]

    @classmethod
    def of(cls, datasets: Sequence[Dataset], runtime: Optional[Runtime] = None) -> "TestSets":
        sizes = tuple(len(dataset) for dataset in datasets)
        everything = ConcatDataset(datasets)
        if fits_in_memory(everything):
            images, labels = as_tensors(everything, runtime)
            return cls(images, labels, sizes)
        return cls(everything, torch.cat([labels_of(dataset) for dataset in datasets]), sizes)

    def first_image(self) -> torch.Tensor:
        return self.images[0] if isinstance(self.images, torch.Tensor) else self.images[0][0]

    def part(self, index: int) -> Images:
        """The images of set `index`."""
        start = sum(self.sizes[:index])
        if isinstance(self.images, torch.Tensor):
            return self.images[start: start + self.sizes[index]]
        return Subset(self.images, range(start, start + self.sizes[index]))

    def outputs(self, fn: Fn, runtime: Runtime, inputs: Optional[Images] = None) -> torch.Tensor:
        """`fn`'s outputs (logits, or a strategy's selected task per image) on every image, in set order, as one float
        tensor on the CPU: the runner computes accuracies and diagnostics from it (benchmark/diagnostics.py).
        `inputs`: what `fn` reads instead of the images (their features, for a strategy's `classify`)."""
        return apply(fn, self.images if inputs is None else inputs, runtime).cpu()

    def accuracies(self, predict: Fn, runtime: Runtime) -> list[float]:
        """Top-1 accuracy (%) of `predict` (logits) on each set; labels beyond the logits count as wrong."""
        correct = (apply(predict, self.images, runtime, predicted_labels).cpu() == self.labels).float()
        return [100.0 * float(part.mean()) for part in correct.split(list(self.sizes))]

    def logits(self, strategy: Any, features: "StrategyFeatures", runtime: Runtime) -> torch.Tensor:
        """`strategy`'s logits on every image now: from its (possibly shared) features when it classifies features,
        else by `predict` on the images."""
        if strategy.classifies_features and isinstance(self.images, torch.Tensor):
            return self.outputs(strategy.classify, runtime, inputs=features(self.images))
        return self.outputs(strategy.predict, runtime)

    def task_aware_accuracies(self, predict: Callable[..., torch.Tensor], runtime: Runtime) -> list[float]:
        """Accuracy (%) on each set j of `predict(x, task_id=j)`: the task identity given at test time."""
        labels = self.labels.split(list(self.sizes))
        return [accuracy(lambda x, j=j: predict(x, task_id=j), self.part(j), labels[j], runtime)
                for j in range(len(self.sizes))]


def accuracy(predict: Fn, images: Images, labels: torch.Tensor, runtime: Runtime) -> float:
    """Top-1 accuracy (%) of `predict` (logits) on one set."""
    return TestSets(images, labels, (len(labels),)).accuracies(predict, runtime)[0]


def embed(features: Fn, images: Images, runtime: Runtime) -> torch.Tensor:
    """`features` of every image, as one float tensor on the runtime's device."""
    return apply(features, images, runtime)


@dataclass
class StrategyFeatures:
    """A strategy's features at one evaluation point (after a task, or before the first): each image set is embedded
    once however many scorers ask, and, with `runtime.share`, taken from an earlier evaluation of an equal network
    (same `feature_key`, `benchmark.sharing`) when there was one, in this run or another run of this process (or,
    with the feature store, another process). Sets in memory and sets read from files alike (these keyed by their
    files' contents, `benchmark.datasets.fingerprints`)."""

    strategy: Any
    runtime: Runtime
    _computed: dict[int, torch.Tensor] = field(default_factory=dict, repr=False)
    _key: Optional[str] = field(default=None, repr=False)

    def __call__(self, images: Images) -> torch.Tensor:
        if id(images) not in self._computed:
            self._computed[id(images)] = self._compute(images) if self.runtime.share else embed(
                self.strategy.features, images, self.runtime)
        return self._computed[id(images)]

    def _compute(self, images: Images) -> torch.Tensor:
        """The features, from an earlier evaluation of the same network; else, where the strategy's features start
        with a frozen stage, from that stage's kept outputs (in their own dtype, so the rest computes exactly what
        it would on the images; images in memory only: a stage's outputs on a set too large to hold are larger
        still); else from the images."""
        self._key = self._key or self.strategy.feature_key()
        stage = self.strategy.frozen_stage() if isinstance(images, torch.Tensor) else None
        if stage is None:
            compute = lambda: embed(self.strategy.features, images, self.runtime)  # noqa: E731
        else:
            prefix, prefix_key, rest = stage
            outputs = lambda: apply(prefix, images, self.runtime, reduce=lambda out: out)  # noqa: E731
            compute = lambda: embed(rest, memoised(prefix_key, images, self.runtime.context, outputs),  # noqa
                                    self.runtime)
        return memoised(self._key, images, self.runtime.context, compute)
