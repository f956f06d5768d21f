"""The offline mini benchmark: scikit-learn's bundled handwritten digits (real 8x8 scans, no network).

- `mini-split-digits`: class-incremental, 5 tasks x 2 classes, seeded class order.
- `mini-domain-digits`: domain-incremental, the 10 digits under 4 domains (clean, inverted, rotated, noise+blur);
  by default each domain trains on its own stratified share of the training images (a real domain sequence shows
  new images in each domain) and is tested on the whole test split under its transform.

The train/test split is stratified and fixed (`split_seed`), whatever the run's seed: the run seed moves the class
order, never the test set.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torchvision.transforms.functional import gaussian_blur

from benchmark.config import require
from benchmark.datasets.images import ImageSpec, normalize, resize
from benchmark.streams.base import Stream, class_incremental, domain_incremental, register_stream

DIGIT_NAMES = tuple(str(d) for d in range(10))
Split = tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def digits_split(test_fraction: float, split_seed: int) -> Split:
    """Digits as float (N, 1, 8, 8) in [0, 1], stratified into train and test."""
    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    labels = torch.tensor(digits.target, dtype=torch.long)
    train_idx, test_idx = train_test_split(torch.arange(len(labels)).numpy(), test_size=test_fraction,
                                           stratify=labels.numpy(), random_state=split_seed)
    return (images[train_idx], labels[train_idx]), (images[test_idx], labels[test_idx])


def _noise_blur(x: torch.Tensor) -> torch.Tensor:
    """Gaussian blur (sigma 1 px) then additive Gaussian noise (std 0.2), with a fixed noise seed."""
    generator = torch.Generator().manual_seed(0)
    blurred = gaussian_blur(x, kernel_size=5, sigma=1.0)
    return (blurred + 0.2 * torch.randn(blurred.shape, generator=generator)).clamp(0.0, 1.0)


DOMAINS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "clean": lambda x: x,
    "inverted": lambda x: 1.0 - x,
    "rotated": lambda x: torch.rot90(x, k=1, dims=(-2, -1)),
    "noise_blur": _noise_blur,
}


@dataclass(frozen=True)
class SplitDigitsParams:
    n_tasks: int = 5  # tasks; must divide the 10 classes
    test_fraction: float = 0.2  # share of each class held out for testing
    split_seed: int = 0  # fixes the train/test split across runs
    shuffle: bool = True  # class order: seeded by the run (true) or the digits' own 0-9 (false)

    def __post_init__(self) -> None:
        require(0.05 <= self.test_fraction <= 0.5, "test_fraction", "in [0.05, 0.5]", self.test_fraction)


@dataclass(frozen=True)
class DomainDigitsParams:
    domains: tuple[str, ...] = tuple(DOMAINS)  # one task per domain, in this order
    disjoint_train: bool = True  # each domain trains on its own 1/len(domains) of the training images; false: all
    test_fraction: float = 0.2
    split_seed: int = 0

    def __post_init__(self) -> None:
        require(len(self.domains) >= 1 and set(self.domains) <= set(DOMAINS) and
                len(set(self.domains)) == len(self.domains),
                "domains", f"distinct names from {', '.join(DOMAINS)}", list(self.domains))
        require(0.05 <= self.test_fraction <= 0.5, "test_fraction", "in [0.05, 0.5]", self.test_fraction)


def stratified_parts(labels: torch.Tensor, parts: int, seed: int) -> list[torch.Tensor]:
    """Indices split into `parts` disjoint groups with (nearly) equal class counts, in a seeded order."""
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    by_class = order[torch.argsort(labels[order], stable=True)]
    return [by_class[part::parts].sort().values for part in range(parts)]


@register_stream("mini-split-digits", SplitDigitsParams)
def mini_split_digits(params: SplitDigitsParams, *, seed: int, image_spec: ImageSpec) -> Stream:
    train, test = digits_split(params.test_fraction, params.split_seed)
    prepare = lambda x: normalize(resize(x, image_spec), image_spec)  # noqa: E731
    return class_incremental("mini-split-digits", (prepare(train[0]), train[1]), (prepare(test[0]), test[1]),
                             params.n_tasks, seed, DIGIT_NAMES, shuffle=params.shuffle)


@register_stream("mini-domain-digits", DomainDigitsParams)
def mini_domain_digits(params: DomainDigitsParams, *, seed: int, image_spec: ImageSpec) -> Stream:
    """Domain order is fixed by `domains`; the seed only matters for training."""
    train, test = digits_split(params.test_fraction, params.split_seed)
    train_x, test_x = resize(train[0], image_spec), resize(test[0], image_spec)
    everything = torch.arange(len(train[1]))
    shares = (stratified_parts(train[1], len(params.domains), params.split_seed) if params.disjoint_train
              else [everything] * len(params.domains))
    domains = {
        name: ((normalize(DOMAINS[name](train_x[share]), image_spec), train[1][share]),
               (normalize(DOMAINS[name](test_x), image_spec), test[1]))
        for name, share in zip(params.domains, shares)
    }
    return domain_incremental("mini-domain-digits", domains, DIGIT_NAMES)
