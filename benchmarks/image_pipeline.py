"""Decode-and-transform throughput of the suite's image-file pipeline against a bare torchvision `ImageFolder` +
`DataLoader` on the same JPEG files (`benchmarks/throughput.py --pipeline`).

Both read `<root>/train/<class>/*.jpg` (training: RandomResizedCrop + flip) and `<root>/test/<class>/*.jpg`
(evaluation: resize, centre crop) for a ViT-B/16 spec (224 px, bicubic, crop_pct 0.9, mean/std 0.5), normalised
float batches out of a DataLoader of batch 64, shuffled for training. The suite: the data sets a prepared-folder
stream builds (`scan_split_folders`, `as_datasets`: torchvision's `decode_jpeg`, uint8 v2 resizes); the bare one:
`ImageFolder` with torchvision's PIL transforms, as the references write them. Each process computes on one thread
and loader workers count as cores (0 workers: the main process decodes, 1 core), so images/s per core is images/s
divided by max(1, workers). Passes alternate (suite, bare, suite, ...); medians are reported.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T
from torchvision.datasets import ImageFolder
from torchvision.transforms import InterpolationMode

from benchmark.datasets.class_folders import scan_split_folders
from benchmark.datasets.files import as_datasets
from benchmark.datasets.images import ImageSpec

VIT_B16 = ImageSpec(input_size=(3, 224, 224), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), interpolation="bicubic",
                    crop_pct=0.9)
BATCH = 64


def suite_datasets(root: Path, spec: ImageSpec = VIT_B16) -> dict[str, Dataset]:
    """The training (augmented) and test data sets a prepared-folder stream reads `root` as."""
    found = scan_split_folders(root)
    splits = as_datasets(found.train, found.test, spec, "rrc_flip")
    return {"train": splits.train, "test": splits.test}


def bare_datasets(root: Path, spec: ImageSpec = VIT_B16,
                  target_transform: Optional[Callable[[int], int]] = None) -> dict[str, ImageFolder]:
    """torchvision's `ImageFolder` with the PIL transforms a reference writes for the same spec: training images
    augmented (`train`) and not (`plain`), test images."""
    size, interpolation = spec.input_size[-1], InterpolationMode(spec.interpolation)
    normalise = [T.ToTensor(), T.Normalize(spec.mean, spec.std)]
    train = T.Compose([T.RandomResizedCrop(size, interpolation=interpolation), T.RandomHorizontalFlip(), *normalise])
    test = T.Compose([T.Resize(int(size / spec.crop_pct), interpolation=interpolation), T.CenterCrop(size),
                      *normalise])
    return {"train": ImageFolder(str(root / "train"), train, target_transform),
            "plain": ImageFolder(str(root / "train"), test, target_transform),
            "test": ImageFolder(str(root / "test"), test, target_transform)}


def images_per_second(dataset: Dataset, workers: int, shuffle: bool) -> float:
    """One pass over `dataset` through a DataLoader of `workers` processes (each on one thread)."""
    loader = DataLoader(dataset, batch_size=BATCH, shuffle=shuffle, num_workers=workers,
                        worker_init_fn=lambda _: torch.set_num_threads(1))
    start, count = time.perf_counter(), 0
    for images, _ in loader:
        count += len(images)
    return count / (time.perf_counter() - start)


def measure(root: Path, workers: int, repeats: int) -> dict[str, Any]:
    """Median images/s and images/s per core of each pipeline and split, passes interleaved."""
    pipelines: dict[str, Callable[[Path], dict[str, Dataset]]] = {"suite": suite_datasets, "bare": bare_datasets}
    data = {name: build(root) for name, build in pipelines.items()}
    rates: dict[str, list[float]] = {f"{name} {split}": [] for name in data for split in ("train", "test")}
    for _ in range(repeats):
        for split in ("train", "test"):
            for name, sets in data.items():
                rates[f"{name} {split}"].append(images_per_second(sets[split], workers, split == "train"))
    cores = max(1, workers)
    median = {key: statistics.median(values) for key, values in rates.items()}
    return {"mode": "pipeline", "workers": workers, "cores": cores, "repeats": repeats,
            "images": {split: len(data["suite"][split]) for split in ("train", "test")},
            "images_per_s": {key: round(value, 1) for key, value in median.items()},
            "images_per_s_per_core": {key: round(value / cores, 1) for key, value in median.items()},
            "all_images_per_s": {key: [round(v, 1) for v in values] for key, values in rates.items()},
            "suite_over_bare": {split: median[f"suite {split}"] / median[f"bare {split}"]
                                for split in ("train", "test")}}


def print_report(report: dict[str, Any]) -> None:
    print(f"image pipeline, {report['images']['train']} train / {report['images']['test']} test JPEGs, "
          f"{report['workers']} loader workers ({report['cores']} core(s)), one thread each, median of "
          f"{report['repeats']}")
    for key, rate in report["images_per_s"].items():
        print(f"{key:<12}{rate:>10.1f} images/s{report['images_per_s_per_core'][key]:>10.1f} per core")
    for split, ratio in report["suite_over_bare"].items():
        print(f"suite / bare, {split}: {ratio:.2f}")
