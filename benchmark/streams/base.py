"""A stream of tasks, built with Avalanche, where each task knows its classes, its name and its test set.

Two scenarios exist: class-incremental (each task brings new classes; the label space grows) and
domain-incremental (every task has the same classes under a new input distribution).

Labels inside a stream are output units: in class-incremental streams the original class ids are remapped so
that task t's classes get the next free units (0, 1 for task 0, then 2, 3, ...), as Avalanche's
`class_ids_from_zero_from_first_exp` does; `Task.classes` keeps the original ids and `Stream.class_order` the
seeded permutation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from avalanche.benchmarks import benchmark_from_datasets, class_incremental_benchmark
from avalanche.benchmarks.scenarios.generic_scenario import CLScenario
from avalanche.benchmarks.utils import as_classification_dataset
from torch.utils.data import Dataset, TensorDataset

from benchmark.config import require
from benchmark.errors import ConfigError
from benchmark.datasets.images import ImageSpec
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


@dataclass(frozen=True)
class Stream:
    name: str
    scenario: str
    tasks: tuple[Task, ...]
    class_order: tuple[int, ...]  # original class ids in the order the stream presents them
    class_names: tuple[str, ...]  # names of the original class ids
    benchmark: CLScenario


class LabelledTensors(TensorDataset):
    """Images and labels as tensors, with the `targets` attribute Avalanche reads class membership from."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        super().__init__(images, labels)
        self.targets = labels


def seeded_class_order(num_classes: int, seed: int) -> list[int]:
    """The field's convention (PyCIL, SLCA): `np.random.seed(seed); np.random.permutation(C)`."""
    return np.random.RandomState(seed).permutation(num_classes).tolist()


def class_incremental(name: str, train: tuple[torch.Tensor, torch.Tensor], test: tuple[torch.Tensor, torch.Tensor],
                      n_tasks: int, seed: int, class_names: Sequence[str]) -> Stream:
    """Split the classes into `n_tasks` equal groups in a seeded order; labels become output units."""
    num_classes = len(class_names)
    require(1 <= n_tasks <= num_classes and num_classes % n_tasks == 0, "n_tasks",
            f"a divisor of the {num_classes} classes", n_tasks)
    order = seeded_class_order(num_classes, seed)
    unit_of_class = torch.empty(num_classes, dtype=torch.long)
    unit_of_class[torch.tensor(order)] = torch.arange(num_classes)
    datasets = {split: as_classification_dataset(LabelledTensors(x, unit_of_class[y]))
                for split, (x, y) in (("train", train), ("test", test))}
    benchmark = class_incremental_benchmark(datasets, class_order=list(range(num_classes)), num_experiences=n_tasks)
    per_task = num_classes // n_tasks
    tasks = []
    for index, (train_exp, test_exp) in enumerate(zip(benchmark.train_stream, benchmark.test_stream)):
        labels = tuple(sorted(train_exp.classes_in_this_experience))
        classes = tuple(order[unit] for unit in labels)
        tasks.append(Task(index, f"task{index}:" + ",".join(class_names[c] for c in classes), classes, labels,
                          (index + 1) * per_task, train_exp.dataset, test_exp.dataset))
    return Stream(name, CLASS_INCREMENTAL, tuple(tasks), tuple(order), tuple(class_names), benchmark)


def domain_incremental(name: str, domains: Mapping[str, tuple[tuple[torch.Tensor, torch.Tensor],
                                                              tuple[torch.Tensor, torch.Tensor]]],
                       class_names: Sequence[str]) -> Stream:
    """One task per domain, in the mapping's order; every task has all classes."""
    train_sets = [as_classification_dataset(LabelledTensors(*train)) for train, _ in domains.values()]
    test_sets = [as_classification_dataset(LabelledTensors(*test)) for _, test in domains.values()]
    benchmark = benchmark_from_datasets(train=train_sets, test=test_sets)
    everything = tuple(range(len(class_names)))
    tasks = tuple(
        Task(index, domain, everything, everything, len(class_names), train_exp.dataset, test_exp.dataset)
        for index, (domain, train_exp, test_exp) in enumerate(zip(domains, benchmark.train_stream,
                                                                    benchmark.test_stream)))
    return Stream(name, DOMAIN_INCREMENTAL, tasks, everything, tuple(class_names), benchmark)


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
