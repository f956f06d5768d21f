"""Data sets of image files decoded on access: the large benchmarks (CIFAR-100 at 224 px, ImageNet-R, DomainNet,
ImageNet val) do not fit in memory as ready tensors, so each item is read and transformed when a loader asks for it.

Transforms are timm's `create_transform` with the backbone's own data config (resolution, interpolation,
mean/std, crop_pct): the same preprocessing the backbone was evaluated with when it was published.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import torch
from PIL import Image, UnidentifiedImageError
from timm.data import create_transform
from torch.utils.data import Dataset

from benchmark.datasets.images import ImageSpec
from benchmark.errors import DatasetMissingError

AUGMENTATIONS = ("none", "rrc_flip")  # train augmentation: none, or RandomResizedCrop + horizontal flip

Transform = Callable[[Image.Image], torch.Tensor]


def eval_transform(spec: ImageSpec) -> Transform:
    """Resize (shorter side to size / crop_pct), centre-crop, to tensor, normalise: the backbone's eval pipeline."""
    return create_transform(spec.input_size, is_training=False, interpolation=spec.interpolation, mean=spec.mean,
                            std=spec.std, crop_pct=spec.crop_pct, crop_mode=spec.crop_mode)


def train_transform(spec: ImageSpec, augment: str) -> Transform:
    """`rrc_flip`: RandomResizedCrop (scale 0.08-1) + horizontal flip, no colour jitter (the CL papers' recipe);
    `none`: the eval pipeline."""
    if augment == "none":
        return eval_transform(spec)
    return create_transform(spec.input_size, is_training=True, interpolation=spec.interpolation, mean=spec.mean,
                            std=spec.std, hflip=0.5, color_jitter=0.0)


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
