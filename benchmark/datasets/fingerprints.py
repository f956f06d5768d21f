"""A digest of what decides the images of a data set read from files, so that a network's features of such a set are
memoised and stored (benchmark/sharing.py, benchmark/feature_store.py) as those of a tensor in memory are, and a hit
decodes no file.

An item's pixels are decided by its file's bytes and by the transform that decodes them (timm's eval pipeline:
resize, centre crop, to tensor, normalise). The digest covers, item by item in order, XXH3-128 of each file's bytes
and the transform's settings (class and attributes at full precision: the transforms' own repr rounds a normalising
mean to four decimals). Not the paths: a copy of the data elsewhere (another node, another folder) holds the same
pixels. Not the labels: features never read them (the caller takes labels from the set's `targets`), and the same
images under another class order share their features.

Contents, not (size, modification time): measured on generated 224 px JPEGs (22 KB, docs/performance.md), reading
and hashing a file costs about 12 us, a stat 2 us, decoding and transforming it milliseconds, so a content digest is
under 1% of the work it saves. It keeps its key through copies that reset times (`cp`, a fresh extraction), a
touched but unchanged file keeps it too, and a file replaced by another of the same size and time (`cp -p`, an
archive's fixed timestamps) gets a new one. Each file's digest is kept in this process under its stat (device,
inode, size, modification and change times), so a set is read once per process and only stat-ed afterwards.

Items resolve to files through the wrappers the suite builds around `ImageFiles` (`image_items`, one function per
wrapper type registered with `functools.singledispatch`): Avalanche's datasets (their flat data's datasets and
indices; only without a transform group of their own), torch's `Subset` and `ConcatDataset`, and the suite's
relabelling (`benchmark.streams.base.Relabelled`, registered there). A set with any other part (tensors in memory,
which are keyed by their own bytes), whose transform is random (training augmentation: other pixels on every pass)
or not known to be deterministic (any transform class outside `DETERMINISTIC`), or with a file that cannot be read,
has no fingerprint: its features are computed every time, and a missing file fails as decoding reports it.
"""

from __future__ import annotations

import enum
import functools
import os
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch
import xxhash
from avalanche.benchmarks.utils import AvalancheDataset
from avalanche.benchmarks.utils.flat_data import FlatData
from timm.data.transforms import CenterCropOrPad, MaybePILToTensor, MaybeToTensor
from torch.utils.data import ConcatDataset, Dataset, Subset
from torchvision import transforms
from torchvision.transforms.v2 import functional as tv_functional

from benchmark.datasets.files import ImageFiles, TensorPipeline

Item = tuple[Path, Callable[..., Any]]  # an item's image file and the transform that decodes it
# transforms whose output is a function of their input and settings alone (no random draw)
DETERMINISTIC = (transforms.Resize, transforms.CenterCrop, transforms.ToTensor, transforms.PILToTensor,
                 transforms.Normalize, transforms.Grayscale, transforms.ConvertImageDtype, MaybeToTensor,
                 MaybePILToTensor, CenterCropOrPad)
# the suite's own pipeline's deterministic steps (benchmark/datasets/files.py: `eval_transform`'s resize and crop)
DETERMINISTIC_FUNCTIONS = (tv_functional.resize, tv_functional.center_crop)
DIGESTS_KEPT = 2**21  # files whose content digest this process keeps (ImageNet's train split: 1.28 M)


@functools.singledispatch
def image_items(dataset: Dataset) -> Optional[list[Item]]:
    """Each item's (file, transform) in order, or None when a part of `dataset` is not a known file-backed one."""
    return None


@image_items.register
def _(dataset: ImageFiles) -> Optional[list[Item]]:
    return [(path, dataset.transform) for path in dataset.paths]


@image_items.register
def _(dataset: Subset) -> Optional[list[Item]]:
    items = image_items(dataset.dataset)
    return None if items is None else [items[int(index)] for index in dataset.indices]


@image_items.register
def _(dataset: ConcatDataset) -> Optional[list[Item]]:
    return _joined(dataset.datasets)


@image_items.register
def _(dataset: AvalancheDataset) -> Optional[list[Item]]:
    return image_items(dataset._flat_data)


@image_items.register
def _(dataset: FlatData) -> Optional[list[Item]]:
    """Avalanche's concatenation and subset in one: its datasets joined, then its indices (None: all, in order); a
    transform group of its own (applied to every item) is not resolved."""
    groups = (getattr(dataset, "_transform_groups", None), getattr(dataset, "_frozen_transform_groups", None))
    if any(group is not None and any(t is not None for t in group.transform_groups.values()) for group in groups):
        return None
    items = _joined(dataset._datasets)
    if items is None or dataset._indices is None:
        return items
    return [items[int(index)] for index in dataset._indices]


def _joined(datasets: Sequence[Dataset]) -> Optional[list[Item]]:
    joined: list[Item] = []
    for part in datasets:
        items = image_items(part)
        if items is None:
            return None
        joined += items
    return joined


def _setting(value: Any) -> Any:
    """A transform attribute as a plain, exact value (tensors as lists, enums by name)."""
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, enum.Enum):
        return str(value)
    if isinstance(value, (list, tuple)):
        return tuple(_setting(v) for v in value)
    return value


def _steps_key(steps: Sequence[Callable[..., Any]]) -> Optional[str]:
    keys = [transform_key(step) for step in steps]
    return None if any(key is None for key in keys) else "[" + ", ".join(keys) + "]"  # type: ignore[arg-type]


def transform_key(transform: Callable[..., Any]) -> Optional[str]:
    """The class and public settings of every step of a deterministic transform (a `Compose` of `DETERMINISTIC`
    steps), or None when any step may draw random numbers or is unknown."""
    if isinstance(transform, transforms.Compose):
        return _steps_key(transform.transforms)
    if isinstance(transform, TensorPipeline):  # the suite's own pipeline: its settings, then each geometry step
        steps = _steps_key(transform.geometry)
        return None if steps is None else f"TensorPipeline{(transform.gray, transform.mean, transform.std)!r}{steps}"
    if isinstance(transform, functools.partial) and transform.func in DETERMINISTIC_FUNCTIONS:
        keywords = sorted((name, _setting(value)) for name, value in transform.keywords.items())
        return f"{transform.func.__module__}.{transform.func.__qualname__}{_setting(transform.args)!r}{keywords!r}"
    if type(transform) not in DETERMINISTIC:
        return None
    settings = sorted((name, _setting(value)) for name, value in vars(transform).items() if not name.startswith("_"))
    return f"{type(transform).__module__}.{type(transform).__qualname__}{settings!r}"


@functools.lru_cache(maxsize=DIGESTS_KEPT)
def _content(path: str, device: int, inode: int, size: int, mtime_ns: int, ctime_ns: int) -> str:
    """XXH3-128 of a file's bytes, kept under its stat (a changed file has another stat, so it is read again)."""
    return xxhash.xxh3_128_hexdigest(Path(path).read_bytes())


def file_digest(path: Path) -> Optional[str]:
    """The content digest of the file at `path`, read once per process and stat; None if it cannot be read."""
    try:
        stat = os.stat(path)
        return _content(str(path), stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
    except OSError:
        return None


def forget_file_digests() -> None:
    """Forget the files' digests this process keeps (a benchmark's cold start: read every file again)."""
    _content.cache_clear()


def image_set_fingerprint(dataset: Dataset) -> Optional[str]:
    """The digest of what decides `dataset`'s images (see the module docstring), or None: not file-backed, random,
    empty or unreadable."""
    items = image_items(dataset)
    if not items:
        return None
    steps: dict[int, int] = {}  # id(transform) -> its position in `keys`
    keys: list[str] = []
    digest = xxhash.xxh3_128(b"image files")
    for path, transform in items:
        if id(transform) not in steps:
            key = transform_key(transform)
            if key is None:
                return None
            steps[id(transform)] = len(keys)
            keys.append(key)
        content = file_digest(path)
        if content is None:
            return None
        digest.update(f"{content}:{steps[id(transform)]}\n".encode())
    digest.update(repr(keys).encode())
    return digest.hexdigest()
