"""ImageNet-1k (ILSVRC-2012) as image folders, the pre-training domain of the ImageNet-pre-trained backbones:
`<root>/train/<wnid>/*.JPEG` and `<root>/val/<wnid>/*.JPEG`, torchvision's ImageFolder layout (the validation
images sorted into wnid folders, as torchvision's `ImageNet` class or the usual `valprep.sh` leave them).

- Classes: the wnid folders of `val/` in sorted order, class index = position: the standard ImageNet-1k label order
  of timm's and torchvision's classifiers. `train/` must hold the same wnids. A folder with all 1000 classes must
  hold exactly ImageNet-1k's wnids (timm's `ImageNetInfo`); its classes are named by CLIP's ImageNet class names
  (`open_clip.zero_shot_metadata.IMAGENET_CLASSNAMES`, in the same order); a folder with fewer classes (a subset,
  or a test's toy copy) names them by their wnids.
- Subsets: `per_class_subset` spreads a requested size evenly over the classes, seeded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES
from timm.data import ImageNetInfo

from benchmark.datasets.files import LabelledFiles, image_files, sub_folders
from benchmark.errors import DatasetMissingError

SPLITS = ("train", "val")
LAYOUT = "<imagenet_dir>/{split}/<wnid>/*.JPEG"
NUM_CLASSES = 1000


@dataclass(frozen=True)
class ImagenetSplit:
    """Every image file of one split with its class index, and the classes' wnids and names."""

    files: LabelledFiles  # sorted by path
    wnids: tuple[str, ...]
    class_names: tuple[str, ...]


def class_folders(root: Path, split: str) -> tuple[str, ...]:
    """The sorted wnid folders of `<root>/<split>`; a missing or empty split, or images not sorted into wnid folders
    (ImageNet's val archive unpacks flat), is a one-line error naming the folder."""
    folder = root / split
    layout = LAYOUT.format(split=split)
    if not folder.is_dir():
        raise DatasetMissingError(f"ImageNet-1k {split} images not found: no folder {folder}; expected {layout} "
                                  "(set the backbone's imagenet_dir to the folder holding train/ and val/)")
    return tuple(entry.name for entry in sub_folders(folder, "class", layout))  # flat val/ images are an error too


def class_names(wnids: Sequence[str]) -> tuple[str, ...]:
    """CLIP's class names for the 1000 ImageNet-1k classes; the wnids themselves for a subset of classes."""
    if len(wnids) != NUM_CLASSES:
        return tuple(wnids)
    if list(wnids) != ImageNetInfo("imagenet-1k").label_names():
        raise DatasetMissingError("the 1000 class folders are not ImageNet-1k's wnids (n01440764 ... n15075141); "
                                  "check the data set's layout")
    return tuple(IMAGENET_CLASSNAMES)


def load_split(root: Path, split: str) -> ImagenetSplit:
    """Scan `<root>/<split>`: classes in the sorted wnid order of `val/`, every image file of each class."""
    wnids = class_folders(root, "val")
    if split != "val" and class_folders(root, split) != wnids:
        raise DatasetMissingError(f"{root / split} and {root / 'val'} hold different class folders; "
                                  "both need the same wnids")
    per_class = [image_files(root / split / wnid) for wnid in wnids]
    files = LabelledFiles(tuple(path for paths in per_class for path in paths),
                          tuple(label for label, paths in enumerate(per_class) for _ in paths))
    return ImagenetSplit(files, wnids, class_names(wnids))


def per_class_subset(labels: Sequence[int], size: int, seed: int) -> list[int]:
    """Sorted indices of `size` items spread over the classes as evenly as their sizes allow (every class
    gets size / classes, rounded down or up), all items if `size` exceeds them.

    Each class's items are ranked by a seeded permutation; items are taken rank by rank (every class's first, then
    every class's second, ...) and, within a rank, in a seeded order of the classes. The same labels and seed give
    the same subset, and a larger size extends a smaller one."""
    labels_array = np.asarray(labels, dtype=np.int64)
    rng = np.random.RandomState(seed)
    rank = np.empty(len(labels_array), dtype=np.int64)
    by_class = np.argsort(labels_array, kind="stable")
    classes, counts = np.unique(labels_array, return_counts=True)
    for members in np.split(by_class, np.cumsum(counts)[:-1]):
        rank[members[rng.permutation(len(members))]] = np.arange(len(members))
    class_position = np.empty(len(classes), dtype=np.int64)
    class_position[rng.permutation(len(classes))] = np.arange(len(classes))
    order = np.lexsort((class_position[np.searchsorted(classes, labels_array)], rank))
    return sorted(order[:size].tolist())
