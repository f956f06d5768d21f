"""Data sets of image files decoded on access: the large benchmarks (CIFAR-100 at 224 px, ImageNet-R, DomainNet,
ImageNet val) do not fit in memory as ready tensors, so each item is read and transformed when a loader asks for it.

Transforms are timm's `create_transform` with the backbone's own data config (resolution, interpolation,
mean/std, crop_pct): the same preprocessing the backbone was evaluated with when it was published. A one-channel
backbone (vit-mini) sees each image's grey levels (PIL's "L" conversion, ITU-R 601-2 luma) first.

Folder-based data sets (ImageNet-R, DomainNet-style folders) list their files with `image_files` and split them with
`LabelledFiles.split`: a seeded permutation of the files sorted by path, so a split depends on the split seed and
the set of files, never on the order in which the file system lists them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, NamedTuple, Optional, Sequence

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from timm.data import create_transform
from torch.utils.data import Dataset
from torchvision.transforms import Compose, Grayscale

from benchmark.config import require
from benchmark.datasets.fashion_mnist import DEFAULT_DATA_DIR
from benchmark.datasets.images import ImageSpec
from benchmark.errors import DatasetMissingError

AUGMENTATIONS = ("none", "rrc_flip")  # train augmentation: none, or RandomResizedCrop + horizontal flip
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")  # compared lower-case

Transform = Callable[[Image.Image], torch.Tensor]


def for_channels(transform: Transform, spec: ImageSpec) -> Transform:
    """`transform` of RGB images for a 3-channel backbone; of their grey levels for a 1-channel one."""
    channels = spec.input_size[0]
    if channels not in (1, 3):
        raise ValueError(f"cannot map RGB image files to a {channels}-channel backbone")
    return Compose([Grayscale(1), transform]) if channels == 1 else transform


def eval_transform(spec: ImageSpec) -> Transform:
    """Resize (shorter side to size / crop_pct), centre-crop, to tensor, normalise: the backbone's eval pipeline."""
    return for_channels(create_transform(spec.input_size, is_training=False, interpolation=spec.interpolation,
                                         mean=spec.mean, std=spec.std, crop_pct=spec.crop_pct,
                                         crop_mode=spec.crop_mode), spec)


def require_augment(augment: str) -> None:
    """Config check for a stream's `augment` field."""
    require(augment in AUGMENTATIONS, "augment", f"one of {', '.join(AUGMENTATIONS)}", augment)


def require_test_fraction(test_fraction: float) -> None:
    """Config check for a stream's `test_fraction` field."""
    require(0.05 <= test_fraction <= 0.5, "test_fraction", "in [0.05, 0.5]", test_fraction)


def data_path(data_dir: str) -> Path:
    """A stream's `data_dir`, "" meaning the suite's data folder ($CL_BENCH_DATA or ./data, as for vit-mini)."""
    return Path(data_dir) if data_dir else DEFAULT_DATA_DIR


def train_transform(spec: ImageSpec, augment: str) -> Transform:
    """`rrc_flip`: RandomResizedCrop (scale `spec.train_scale`, 0.08-1 unless a recipe says otherwise) + horizontal
    flip, no colour jitter (the CL papers' recipe); `none`: the eval pipeline.

    timm's crop draws its box from Python's `random`, torchvision's from torch's generator: the same distribution,
    not the same draws as a reference that uses torchvision's `RandomResizedCrop`."""
    if augment == "none":
        return eval_transform(spec)
    return for_channels(create_transform(spec.input_size, is_training=True,
                                         interpolation=spec.train_interpolation or spec.interpolation,
                                         scale=spec.train_scale, mean=spec.mean, std=spec.std, hflip=0.5,
                                         color_jitter=0.0), spec)


class ImageFiles(Dataset):
    """(transform(image), label) for a list of image files; `targets` is what Avalanche reads classes from."""

    def __init__(self, paths: Sequence[Path], labels: Sequence[int], transform: Transform) -> None:
        if len(paths) != len(labels):
            raise ValueError(f"{len(paths)} paths but {len(labels)} labels")
        self.paths = [Path(p) for p in paths]
        self.targets = torch.as_tensor(list(labels), dtype=torch.long)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.transform(load_rgb(self.paths[index])), int(self.targets[index])


def load_rgb(path: Path) -> Image.Image:
    """The image at `path` as RGB; a missing or undecodable file is a one-line error that names it."""
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except FileNotFoundError:
        raise DatasetMissingError(f"image file {path} is missing; re-extract the data set") from None
    except (UnidentifiedImageError, OSError) as error:
        raise DatasetMissingError(f"cannot decode image {path} ({error.__class__.__name__}); "
                                  "delete or replace the file and run again") from None


def is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def visible_entries(folder: Path) -> list[Path]:
    """The entries of `folder`, sorted, without hidden ones (.DS_Store, ._* files)."""
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def image_files(folder: Path) -> list[Path]:
    """The image files directly in `folder`, sorted by name; other files (README.txt, lists) and hidden ones are
    ignored. Entry types come from the directory listing, not a stat per file (ImageNet's train split: 1.28 M)."""
    with os.scandir(folder) as entries:
        return sorted(Path(entry.path) for entry in entries
                      if not entry.name.startswith(".") and entry.is_file() and is_image(Path(entry.name)))


@dataclass(frozen=True)
class LabelledFiles:
    """Image paths and their class indices: a split before it becomes an `ImageFiles` with a transform."""

    paths: tuple[Path, ...] = ()
    labels: tuple[int, ...] = ()

    def __add__(self, other: LabelledFiles) -> LabelledFiles:
        return LabelledFiles(self.paths + other.paths, self.labels + other.labels)

    def split(self, test_fraction: float, seed: int) -> tuple[LabelledFiles, LabelledFiles]:
        """(train, test): the files sorted by path, permuted by `np.random.RandomState(seed)`, the first
        round(n * test_fraction) of the permutation for testing. Disjoint, and the same for the same seed and files."""
        order = sorted(range(len(self.paths)), key=lambda i: self.paths[i])
        permuted = [order[i] for i in np.random.RandomState(seed).permutation(len(order))]
        n_test = round(len(permuted) * test_fraction)
        return self.subset(sorted(permuted[n_test:])), self.subset(sorted(permuted[:n_test]))

    def subset(self, indices: Sequence[int]) -> LabelledFiles:
        return LabelledFiles(tuple(self.paths[i] for i in indices), tuple(self.labels[i] for i in indices))

    def dataset(self, transform: Transform) -> ImageFiles:
        return ImageFiles(self.paths, self.labels, transform)


class Splits(NamedTuple):
    """A benchmark's data sets: train (through the train augmentation), test, and, when the train augmentation is
    random, the train files through the eval pipeline (`plain`: what SLCA's class statistics are computed on)."""

    train: ImageFiles
    test: ImageFiles
    plain: Optional[ImageFiles] = None


def as_datasets(train: LabelledFiles, test: LabelledFiles, spec: ImageSpec, augment: str) -> Splits:
    """Train files through `augment`, test files (and, when augmented, train files) through the eval pipeline."""
    plain = None if augment == "none" else train.dataset(eval_transform(spec))
    return Splits(train.dataset(train_transform(spec, augment)), test.dataset(eval_transform(spec)), plain)


def split_datasets(parts: Sequence[LabelledFiles], test_fraction: float, seed: int, spec: ImageSpec,
                   augment: str) -> Splits:
    """(train, test) data sets from the seeded split of each part (e.g. of each domain) on its own, joined."""
    splits = [part.split(test_fraction, seed) for part in parts]
    train = sum((train for train, _ in splits), LabelledFiles())
    test = sum((test for _, test in splits), LabelledFiles())
    return as_datasets(train, test, spec, augment)


def sub_folders(folder: Path, what: str, layout: str) -> list[Path]:
    """The sub-folders of `folder` (one per class or domain); images lying directly in it, or no sub-folder at all,
    are one-line layout errors that show the expected `layout`."""
    entries = visible_entries(folder)
    stray = [p for p in entries if p.is_file() and is_image(p)]
    if stray:
        raise DatasetMissingError(f"images directly in {folder} (e.g. {stray[0].name}); expected {layout}")
    folders = [p for p in entries if p.is_dir()]
    if not folders:
        raise DatasetMissingError(f"no {what} folders in {folder}; expected {layout}")
    return folders


def class_files(class_folders: Sequence[Path], layout: str) -> LabelledFiles:
    """Every image directly in each class folder, labelled by the folder's position in `class_folders`; a class
    folder without images is a one-line layout error that shows the expected `layout`."""
    paths: list[Path] = []
    labels: list[int] = []
    for label, folder in enumerate(class_folders):
        images = image_files(folder)
        if not images:
            raise DatasetMissingError(f"class folder {folder} holds no images; expected {layout}")
        paths += images
        labels += [label] * len(images)
    return LabelledFiles(tuple(paths), tuple(labels))
