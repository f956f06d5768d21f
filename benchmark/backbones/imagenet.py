"""ImageNet-1k as the pre-training domain of the ImageNet-pre-trained backbones (timm ViTs, CLIP): the retention set is
a seeded per-class subset of the validation images, the k-NN bank one of the training images, both through the
backbone's own eval transform (timm's, from its data config), decoded once when they fit in memory and read from
disk on every pass otherwise. Nothing is read before a protocol asks, so a missing folder fails when the retention
data is first needed (the suite's preflight), naming the folder."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from benchmark.backbones.base import PretrainEvalSet
from benchmark.datasets import imagenet
from benchmark.datasets.fashion_mnist import DEFAULT_DATA_DIR
from benchmark.datasets.files import eval_transform
from benchmark.datasets.images import ImageSpec
from benchmark.evaluation import decoded_if_small, labels_of

FOLDER_OF_SPLIT = {"test": "val", "train": "train"}  # ImageNet's labelled held-out split is `val`


def imagenet_root(imagenet_dir: str) -> Path:
    """A backbone's `imagenet_dir`, "" meaning `imagenet/` in the suite's data folder ($CL_BENCH_DATA or ./data)."""
    return Path(imagenet_dir) if imagenet_dir else DEFAULT_DATA_DIR / "imagenet"


def imagenet_data(root: Path, spec: ImageSpec) -> Callable[[str, int, int], PretrainEvalSet]:
    """`pretrain_data` over the ImageNet folders at `root`: (split, size, seed) -> about size / 1000 images of every
    class (`per_class_subset`), in the backbone's input format."""

    def load(split: str, size: int, seed: int) -> PretrainEvalSet:
        folder = FOLDER_OF_SPLIT[split]
        scanned = imagenet.load_split(root, folder)
        chosen = scanned.files.subset(imagenet.per_class_subset(scanned.files.labels, size, seed))
        dataset = chosen.dataset(eval_transform(spec))
        return PretrainEvalSet(f"imagenet-{folder}", decoded_if_small(dataset), labels_of(dataset),
                               scanned.class_names)

    return load
