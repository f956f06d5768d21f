"""ImageNet-R streams (data: benchmark/datasets/imagenet_r.py, `<data_dir>/imagenet-r`).

- `split-imagenet-r`: class-incremental, the 200 classes in `n_tasks` equal groups (10 x 20 by default, as
  DualPrompt, CODA-Prompt and SLCA report) in a seeded class order; train/test a seeded random split of all images
  (`test_fraction` 0.2, `split_seed`; the field's papers also split at random 80/20, each with its own draw).
- `domain-imagenet-r`: domain-incremental over renditions; every task has all 200 classes as outputs (a rendition
  need not hold images of every class). `domains` is the task order, a list of groups, each a rendition or a list
  of renditions forming one task (named `a+b`); by default one task per rendition in RENDITIONS' (alphabetical)
  order: art, cartoon, deviantart, embroidery, graffiti, graphic, misc, origami, painting, sculpture, sketch,
  sticker, tattoo, toy, videogame. Each rendition is split 80/20 on its own, so a file's side of the split does not
  depend on how renditions are grouped.

Published splits: `train_list` and `test_list` name the list files a reference codebase ships (CODA-Prompt's
`imagenet-r_{train,test}.yaml`, CPrompt's `coda_{train,test}.txt`; formats in benchmark/datasets/split_lists.py);
the listed images replace the seeded split (`test_fraction` and `split_seed` are then unused; `domain-imagenet-r`
groups the listed images by rendition). The run records the lists and their hash, `split_sha256`; setting
`split_sha256` pins it, so a different copy of the lists is a configuration error.

The split does not move with the run's seed (only the class order does). Train images go through `augment`
(`rrc_flip` by default), test images through the backbone's eval pipeline. `download` defaults to false so that a
suite never reaches the network unasked.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from benchmark.config import require, require_folder
from benchmark.datasets.files import (LabelledFiles, Splits, as_datasets, data_path, require_augment,
                                     require_test_fraction, split_datasets)
from benchmark.datasets.imagenet_r import FOLDER, RENDITIONS, ImagenetR, load_imagenet_r
from benchmark.datasets.split_lists import check_lists, listed_split
from benchmark.datasets.images import ImageSpec
from benchmark.errors import DatasetMissingError
from benchmark.streams.base import Stream, class_incremental, domain_incremental, register_stream


@dataclass(frozen=True)
class ImagenetRParams:
    data_dir: str = ""  # the folder holding imagenet-r/; "" = $CL_BENCH_DATA or ./data
    download: bool = False  # fetch and extract the 2.1 GB archive when the folder is missing
    test_fraction: float = 0.2  # share of the images held out for testing
    split_seed: int = 0  # fixes the train/test split across runs
    augment: str = "rrc_flip"  # train augmentation: none or rrc_flip
    train_list: str = ""  # a published split's train list (e.g. CPrompt's coda_train.txt); "" = the seeded split
    test_list: str = ""  # its test list (coda_test.txt)
    list_format: str = "auto"  # auto (.yaml/.yml: coda-yaml, else lines), lines or coda-yaml
    split_sha256: str = ""  # the lists' hash, filled in and recorded with the run; set it to pin the lists

    def __post_init__(self) -> None:
        require_folder(self.data_dir, "data_dir")
        require_test_fraction(self.test_fraction)
        require_augment(self.augment)
        object.__setattr__(self, "split_sha256", check_lists(self.train_list, self.test_list, self.list_format,
                                                             self.split_sha256))

    def listed(self, data: ImagenetR, root: Path) -> Optional[tuple[list[int], list[int]]]:
        """(train, test) positions in `data.files` of the published split, or None for the seeded split."""
        if not self.train_list:
            return None
        return listed_split(data.files, root / FOLDER, Path(self.train_list), Path(self.test_list), self.list_format)


@dataclass(frozen=True)
class SplitImagenetRParams(ImagenetRParams):
    n_tasks: int = 10  # tasks; must divide the number of classes (200)
    shuffle: bool = True  # class order: seeded by the run (true) or the sorted wnids' (false)

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.n_tasks >= 1, "n_tasks", ">= 1", self.n_tasks)


def rendition_groups(raw: Any) -> tuple[tuple[str, ...], ...]:
    """`domains` as groups of renditions: a name alone is a group of one; no rendition may appear twice."""
    groups = tuple((g,) if isinstance(g, str) else tuple(g) if isinstance(g, (list, tuple)) else () for g in raw)
    names = [name for group in groups for name in group]
    require(len(groups) >= 1 and all(groups) and all(isinstance(name, str) for name in names)
            and set(names) <= set(RENDITIONS) and len(set(names)) == len(names),
            "domains", f"a non-empty list whose items are a rendition or a list of renditions, each rendition used "
            f"once, from {', '.join(RENDITIONS)}", raw)
    return groups


@dataclass(frozen=True)
class DomainImagenetRParams(ImagenetRParams):
    domains: tuple[Any, ...] = tuple((name,) for name in RENDITIONS)  # task order; groups of renditions

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "domains", rendition_groups(self.domains))


@register_stream("split-imagenet-r", SplitImagenetRParams)
def split_imagenet_r(params: SplitImagenetRParams, *, seed: int, image_spec: ImageSpec) -> Stream:
    root = data_path(params.data_dir)
    data = load_imagenet_r(root, params.download)
    listed = params.listed(data, root)
    if listed is None:
        splits = split_datasets([data.files], params.test_fraction, params.split_seed, image_spec, params.augment)
    else:
        splits = as_datasets(*(data.files.subset(side) for side in listed), image_spec, params.augment)
    return class_incremental("split-imagenet-r", splits.train, splits.test, params.n_tasks, seed, data.wnids,
                             shuffle=params.shuffle, augmented=params.augment != "none", plain=splits.plain)


@register_stream("domain-imagenet-r", DomainImagenetRParams)
def domain_imagenet_r(params: DomainImagenetRParams, *, seed: int, image_spec: ImageSpec) -> Stream:
    """Domain order is fixed by `domains`; the seed only matters for training."""
    root = data_path(params.data_dir)
    data = load_imagenet_r(root, params.download)
    present = set(data.renditions)
    absent = [name for group in params.domains for name in group if name not in present]
    if absent:
        raise DatasetMissingError(f"no ImageNet-R images of rendition(s) {', '.join(absent)} in "
                                  f"{data_path(params.data_dir) / FOLDER}")
    listed = params.listed(data, root)
    domains = {"+".join(group): _domain_splits(data, group, listed, params, image_spec) for group in params.domains}
    return domain_incremental("domain-imagenet-r", domains, data.wnids, augmented=params.augment != "none")


def _domain_splits(data: ImagenetR, group: tuple[str, ...], listed: Optional[tuple[list[int], list[int]]],
                   params: DomainImagenetRParams, image_spec: ImageSpec) -> Splits:
    """One task's data: each rendition of `group` split 80/20 on its own, or its images in the published lists."""
    if listed is None:
        return split_datasets([data.of_renditions([name]) for name in group], params.test_fraction,
                              params.split_seed, image_spec, params.augment)
    sides: list[LabelledFiles] = [data.files.subset([i for i in side if data.renditions[i] in group])
                                  for side in listed]
    return as_datasets(*sides, image_spec, params.augment)
