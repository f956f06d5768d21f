"""Data sets of image files decoded on access: the large benchmarks (CIFAR-100 at 224 px, ImageNet-R, DomainNet,
ImageNet val) do not fit in memory as ready tensors, so each item is read and transformed when a loader asks for it.

Transforms are timm's `create_transform` pipelines with the backbone's own data config (resolution, interpolation,
mean/std, crop_pct): the same preprocessing the backbone was evaluated with when it was published, computed on uint8
tensors (`TensorPipeline`: JPEGs decoded by torchvision's `decode_jpeg`, crops and resizes by torchvision's v2
functions, then float and mean/std), within RESIZE_TOLERANCE_LEVELS grey levels of timm's PIL pipeline and 1.5 to
1.7 times faster per core (docs/performance.md, "The image pipeline"). A one-channel backbone (vit-mini) sees each
image's grey levels (PIL's "L" conversion, ITU-R 601-2 luma) first.

Folder-based data sets (ImageNet-R, DomainNet-style folders) list their files with `image_files` and split them with
`LabelledFiles.split`: a seeded permutation of the files sorted by path, so a split depends on the split seed and
the set of files, never on the order in which the file system lists them.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable, NamedTuple, Optional, Sequence, Union

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from timm.data import create_transform
from timm.data.transforms import RandomResizedCropAndInterpolation
from torch.utils.data import Dataset
from torchvision.io import ImageReadMode, decode_jpeg
from torchvision.transforms import InterpolationMode
from torchvision.transforms.functional import pil_to_tensor
from torchvision.transforms.v2 import functional as F

from benchmark.config import require
from benchmark.datasets.fashion_mnist import DEFAULT_DATA_DIR
from benchmark.datasets.images import ImageSpec
from benchmark.errors import DatasetMissingError

AUGMENTATIONS = ("none", "rrc_flip")  # train augmentation: none, or RandomResizedCrop + horizontal flip
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")  # compared lower-case
JPEG_MAGIC = b"\xff\xd8\xff"
# The largest difference from the PIL pipelines the references use, in grey levels of 255 (before mean/std): the
# rounding of torch's antialiased uint8 resize against PIL's (the same filters); measured in docs/performance.md.
RESIZE_TOLERANCE_LEVELS = 2

# torchvision 0.29 deprecates its decoders in favour of TorchCodec's (not a dependency here) and warns on every call;
# decode_jpeg is what this pipeline uses until it is removed (read_rgb falls back to PIL for what it cannot read).
warnings.filterwarnings("ignore", "The image decoding and encoding capabilities of TorchVision are deprecated",
                        DeprecationWarning)

Picture = Union[Image.Image, torch.Tensor]  # a PIL image (torchvision's CIFAR-100) or a uint8 (C, H, W) tensor
Transform = Callable[[Picture], torch.Tensor]


def gray_levels(image: torch.Tensor) -> torch.Tensor:
    """uint8 RGB (3, H, W) -> uint8 (1, H, W): PIL's "L" conversion (ITU-R 601-2 luma in 16-bit fixed point,
    rounded), written out because torchvision's `rgb_to_grayscale` rounds its float weights otherwise."""
    r, g, b = image.to(torch.int32)
    return ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16).to(torch.uint8).unsqueeze(0)


class TensorPipeline:
    """A picture -> uint8 tensor at the backbone's channels -> `geometry` (crops, resizes, flips on uint8) -> float
    in [0, 1] -> normalised by mean/std: what timm's `create_transform` computes with PIL, on tensors.

    Why not timm's transform itself: PIL's bicubic resize of a 224 px image takes ~0.9 ms on one core, torch's
    antialiased uint8 resize (the same filters, PIL's) ~0.27 ms, and timm's own transforms on a tensor resize in
    float; the output differs from PIL's by at most RESIZE_TOLERANCE_LEVELS grey levels (rounding)."""

    def __init__(self, spec: ImageSpec, geometry: Sequence[Callable[[torch.Tensor], torch.Tensor]]) -> None:
        channels = spec.input_size[0]
        if channels not in (1, 3):
            raise ValueError(f"cannot map RGB image files to a {channels}-channel backbone")
        self.gray, self.geometry = channels == 1, list(geometry)
        self.mean, self.std = list(spec.mean), list(spec.std)

    def __call__(self, picture: Picture) -> torch.Tensor:
        x = picture if isinstance(picture, torch.Tensor) else pil_to_tensor(picture.convert("RGB"))
        x = gray_levels(x) if self.gray else x
        for step in self.geometry:
            x = step(x)
        return F.normalize(F.to_dtype(x, torch.float32, scale=True), self.mean, self.std)


def eval_transform(spec: ImageSpec) -> Transform:
    """Resize the shorter side to floor(size / crop_pct), centre-crop: timm's eval pipeline (`transforms_imagenet_eval`)
    for square inputs with `crop_mode: center`; other shapes and modes run timm's own geometry on the tensor."""
    _, height, width = spec.input_size
    if height != width or spec.crop_mode != "center":
        timm_geometry = create_transform(spec.input_size, is_training=False, interpolation=spec.interpolation,
                                         crop_pct=spec.crop_pct, crop_mode=spec.crop_mode, use_prefetcher=True)
        return TensorPipeline(spec, [timm_geometry])
    resize = partial(F.resize, size=[math.floor(height / spec.crop_pct)],
                     interpolation=InterpolationMode(spec.interpolation), antialias=True)
    return TensorPipeline(spec, [resize, partial(F.center_crop, output_size=[height, width])])


class TimmResizedCrop:
    """timm's RandomResizedCropAndInterpolation: the box drawn by its `get_params` (Python's `random`: the same draws
    as timm's), cropped and resized on the uint8 tensor."""

    def __init__(self, size: tuple[int, int], scale: tuple[float, float], interpolation: str) -> None:
        self.size, self.scale, self.interpolation = list(size), scale, InterpolationMode(interpolation)

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        top, left, height, width = RandomResizedCropAndInterpolation.get_params(image, self.scale, (3 / 4, 4 / 3))
        return F.resized_crop(image, top, left, height, width, self.size, self.interpolation, antialias=True)


def horizontal_flip(image: torch.Tensor) -> torch.Tensor:
    """torchvision's RandomHorizontalFlip(0.5) (one draw of torch's generator), then the draw timm's no-op
    ColorJitter makes (`torch.randperm(4)`, `color_jitter: 0`): so an augmented stream draws what it drew through
    timm's PIL transforms, and its crops and flips stay the same images' crops and flips."""
    flipped = F.horizontal_flip(image) if torch.rand(1) < 0.5 else image
    torch.randperm(4)
    return flipped


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
    """`rrc_flip`: RandomResizedCrop (scale `spec.train_scale`, 0.08-1 unless a recipe says otherwise, ratio 3/4-4/3)
    + horizontal flip, no colour jitter (the CL papers' recipe); `none`: the eval pipeline.

    The crop's box is drawn as timm's from Python's `random`, torchvision's from torch's generator: the same
    distribution, not the same draws as a reference that uses torchvision's `RandomResizedCrop`."""
    if augment == "none":
        return eval_transform(spec)
    crop = TimmResizedCrop(spec.input_size[1:], spec.train_scale, spec.train_interpolation or spec.interpolation)
    return TensorPipeline(spec, [crop, horizontal_flip])


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
        return self.transform(read_rgb(self.paths[index])), int(self.targets[index])


def read_rgb(path: Path) -> torch.Tensor:
    """The image at `path` as a uint8 RGB tensor (3, H, W); a missing or undecodable file is a one-line error that
    names it. JPEG files are decoded by torchvision's `decode_jpeg` (libjpeg-turbo, as PIL: the same pixels, ~25%
    faster on one core), others, and JPEGs it cannot read, through PIL."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DatasetMissingError(f"image file {path} is missing; re-extract the data set") from None
    if data.startswith(JPEG_MAGIC):
        try:
            return decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)
        except RuntimeError:  # a JPEG variant libjpeg-turbo's torchvision build refuses: PIL says why, or reads it
            pass
    return pil_to_tensor(load_rgb(path))


def load_rgb(path: Path) -> Image.Image:
    """The image at `path` as a PIL RGB image; a missing or undecodable file is a one-line error that names it."""
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
