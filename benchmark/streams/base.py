"""A stream of tasks, built with Avalanche, where each task knows its classes, its name and its test set.

Two scenarios exist: class-incremental (each task brings new classes; the label space grows) and
domain-incremental (every task has the same classes under a new input distribution).

Labels inside a stream are output units: in class-incremental streams the original class ids are remapped so
that task t's classes get the next free units (0, 1 for task 0, then 2, 3, ...), as Avalanche's
`class_ids_from_zero_from_first_exp` does; `Task.classes` keeps the original ids and `Stream.class_order` the
seeded permutation.

The builders take each split either as an (images, labels) pair of ready tensors (small data sets, decoded once) or
as a torch Dataset with a `targets` attribute (image files decoded on access, torchvision data sets); class-incremental
streams relabel a Dataset through `Relabelled`, which keeps its items' images and maps their labels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import torch
from avalanche.benchmarks import benchmark_from_datasets, class_incremental_benchmark
from avalanche.benchmarks.scenarios.generic_scenario import CLScenario
from avalanche.benchmarks.utils import as_classification_dataset
from torch.utils.data import ConcatDataset, Dataset, TensorDataset

from benchmark.config import require
from benchmark.datasets.fingerprints import Item, image_items
from benchmark.datasets.images import ImageSpec
from benchmark.errors import ConfigError, UserInputError
from benchmark.registry import BuilderRegistry

CLASS_INCREMENTAL = "class-incremental"
DOMAIN_INCREMENTAL = "domain-incremental"


@dataclass(frozen=True)
class Task:
    """One experience of a stream."""

    index: int
    name: str
    classes: tuple[int, ...]  # original class ids of the data set
    labels: tuple[int, ...]  # the output units these classes use in this stream
    num_outputs: int  # output units a model needs after this task: all classes seen so far
    train: Dataset  # the Avalanche experience's dataset; items are (image, label)
    test: Dataset
    train_augmented: bool = False  # random train transforms: a frozen prefix's outputs cannot be cached
    train_plain: Optional[Dataset] = None  # when augmented: the same training images under the test transform

    @property
    def train_unaugmented(self) -> Dataset:
        """The training images as the test transform shows them (SLCA's class statistics are computed on these)."""
        return self.train if self.train_plain is None else self.train_plain


@dataclass(frozen=True)
class Stream:
    name: str
    scenario: str
    tasks: tuple[Task, ...]
    class_order: tuple[int, ...]  # original class ids in the order the stream presents them
    class_names: tuple[str, ...]  # names of the original class ids
    benchmark: CLScenario
    manifest_sha256: str = ""  # folder benchmarks: the digest of the image files read (benchmark/datasets/manifests.py)


class LabelledTensors(TensorDataset):
    """Images and labels as tensors, with the `targets` attribute Avalanche reads class membership from."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        super().__init__(images, labels)
        self.targets = labels


class Relabelled(Dataset):
    """The items of a Dataset with a `targets` attribute, each label `c` replaced by `units[c]`; `targets` too."""

    def __init__(self, dataset: Dataset, units: torch.Tensor) -> None:
        self.dataset = dataset
        self.targets = units[torch.as_tensor(dataset.targets, dtype=torch.long)]

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        image, _ = self.dataset[index]
        return image, int(self.targets[index])


@image_items.register
def _(dataset: Relabelled) -> Optional[list[Item]]:
    """The items' images are the wrapped data set's (only labels change)."""
    return image_items(dataset.dataset)


Split = tuple[torch.Tensor, torch.Tensor] | Dataset  # (images, labels) tensors, or a Dataset with `targets`


def labelled(split: Split, units: torch.Tensor | None = None) -> Dataset:
    """`split` as a Dataset with `targets`, its labels mapped through `units` (class id -> output unit) if given."""
    if isinstance(split, tuple):
        images, labels = split
        return LabelledTensors(images, labels if units is None else units[labels])
    if not hasattr(split, "targets"):
        raise TypeError(f"{type(split).__name__} has no `targets`: a stream needs every item's class up front")
    return split if units is None else Relabelled(split, units)


def seeded_class_order(num_classes: int, seed: int) -> list[int]:
    """The field's convention (PyCIL, SLCA): `np.random.seed(seed); np.random.permutation(C)`."""
    return np.random.RandomState(seed).permutation(num_classes).tolist()


def _require_every_class(name: str, datasets: Mapping[str, Dataset], unit_names: Sequence[str]) -> None:
    """Each split must hold every output unit's class (Avalanche splits train and test by the same classes)."""
    for split, dataset in datasets.items():
        missing = sorted(set(range(len(unit_names))) - set(torch.as_tensor(dataset.targets).tolist()))
        if missing:
            raise UserInputError(f"{name}: the {split} split has no images of class(es) "
                                 f"{', '.join(unit_names[u] for u in missing[:10])}; every class needs train and "
                                 "test images")


def class_incremental(name: str, train: Split, test: Split, n_tasks: int, seed: int, class_names: Sequence[str],
                      *, shuffle: bool = True, augmented: bool = False, plain: Optional[Split] = None) -> Stream:
    """Split the classes into `n_tasks` equal groups in a seeded order (`shuffle: false`: the data set's own order,
    as InfLoRA's runs and VTAB's protocol use); labels become output units. `augmented`: the train split's transform
    is random (tasks say so, and no frozen prefix is cached); `plain`: the train split under the test transform,
    split into tasks the same way (`Task.train_plain`)."""
    num_classes = len(class_names)
    require(1 <= n_tasks <= num_classes and num_classes % n_tasks == 0, "n_tasks",
            f"a divisor of the {num_classes} classes", n_tasks)
    order = seeded_class_order(num_classes, seed) if shuffle else list(range(num_classes))
    unit_of_class = torch.empty(num_classes, dtype=torch.long)
    unit_of_class[torch.tensor(order)] = torch.arange(num_classes)
    splits = {"train": train, "test": test, **({"train_plain": plain} if plain is not None else {})}
    relabelled = {split: labelled(data, unit_of_class) for split, data in splits.items()}
    _require_every_class(name, relabelled, [class_names[c] for c in order])
    datasets = {split: as_classification_dataset(dataset) for split, dataset in relabelled.items()}
    benchmark = class_incremental_benchmark(datasets, class_order=list(range(num_classes)), num_experiences=n_tasks)
    per_task = num_classes // n_tasks
    plains = plain_datasets(benchmark, n_tasks)
    tasks = []
    for index, (train_exp, test_exp) in enumerate(zip(benchmark.train_stream, benchmark.test_stream)):
        labels = tuple(sorted(train_exp.classes_in_this_experience))
        classes = tuple(order[unit] for unit in labels)
        tasks.append(Task(index, f"task{index}:" + ",".join(class_names[c] for c in classes), classes, labels,
                          (index + 1) * per_task, train_exp.dataset, test_exp.dataset, augmented, plains[index]))
    return Stream(name, CLASS_INCREMENTAL, tuple(tasks), tuple(order), tuple(class_names), benchmark)


def domain_incremental(name: str, domains: Mapping[str, Sequence[Split]], class_names: Sequence[str],
                       *, augmented: bool = False) -> Stream:
    """One task per domain (name -> (train, test) or (train, test, plain), plain None or absent without
    augmentation), in the mapping's order; every task has all classes. `augmented` and `plain` as in
    `class_incremental`."""
    given = lambda i: all(len(parts) > i and parts[i] is not None for parts in domains.values())  # noqa: E731
    streams = {split: [as_classification_dataset(labelled(parts[i])) for parts in domains.values()]
               for i, split in enumerate(("train", "test", "train_plain")) if given(i)}
    benchmark = benchmark_from_datasets(**streams)
    plains = plain_datasets(benchmark, len(domains))
    everything = tuple(range(len(class_names)))
    tasks = tuple(
        Task(index, domain, everything, everything, len(class_names), train_exp.dataset, test_exp.dataset, augmented,
             plains[index])
        for index, (domain, train_exp, test_exp) in enumerate(zip(domains, benchmark.train_stream,
                                                                    benchmark.test_stream)))
    return Stream(name, DOMAIN_INCREMENTAL, tasks, everything, tuple(class_names), benchmark)


def plain_datasets(benchmark: CLScenario, n_tasks: int) -> list[Optional[Dataset]]:
    """Each task's training images under the test transform, where the benchmark has that stream."""
    if not hasattr(benchmark, "train_plain_stream"):
        return [None] * n_tasks
    return [experience.dataset for experience in benchmark.train_plain_stream]


def joint_task(stream: Stream) -> Task:
    """One task holding every task's training images (every class of a class-incremental stream, every domain of a
    domain-incremental one): what a joint-training upper bound trains on, once. Its test set is the union of the
    tasks' test sets; the runner still scores each task's test set on its own."""
    tasks = stream.tasks
    plains = [task.train_plain for task in tasks]
    return Task(0, f"joint:{len(tasks)} tasks", tuple(dict.fromkeys(c for task in tasks for c in task.classes)),
                tuple(dict.fromkeys(u for task in tasks for u in task.labels)), max(t.num_outputs for t in tasks),
                ConcatDataset([task.train for task in tasks]), ConcatDataset([task.test for task in tasks]),
                any(task.train_augmented for task in tasks),
                None if any(p is None for p in plains) else ConcatDataset(plains))


STREAMS = BuilderRegistry("stream", "streams")  # name -> (params dataclass, builder(params, *, seed, image_spec))
register_stream = STREAMS.register_builder


def stream_params(name: str, raw: Mapping[str, Any]) -> Any:
    """Validate a stream's hyper-parameters without building it."""
    return STREAMS.params(name, raw)


def build_stream(name: str, seed: int = 1993, *, image_spec: ImageSpec, **params: Any) -> Stream:
    """The registered stream `name`, its class order seeded by `seed`, images in the backbone's format."""
    validated = STREAMS.params(name, params)
    try:
        return STREAMS.builder(name)(validated, seed=seed, image_spec=image_spec)
    except ConfigError as error:  # checks that need the data (e.g. n_tasks against the class count)
        raise ConfigError(f"streams.{name}.{error}") from None
