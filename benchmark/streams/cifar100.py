"""Split CIFAR-100: the 100 classes of CIFAR-100 in `n_tasks` equal groups (10 x 10 by default, the setting of
L2P, DualPrompt, CODA-Prompt and SLCA), in a seeded class order (`np.random.seed(seed); np.random.permutation(100)`,
PyCIL's convention; the suite's default seed is 1993). Train and test are the data set's own splits (50,000 /
10,000 images).

Images are decoded on access through the backbone's transforms: the test split through its eval pipeline, the
train split through `augment` (`rrc_flip`, the default: RandomResizedCrop + horizontal flip; `none`: the eval
pipeline, which lets strategies cache a frozen prefix's outputs).

Data: `<data_dir>/cifar-100-python` (data_dir "" = $CL_BENCH_DATA or ./data). `download` defaults to false so that a
suite never reaches the network unasked; the error for a missing folder says how to get it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

from benchmark.config import require, require_folder
from benchmark.datasets.cifar100 import load_cifar100
from benchmark.datasets.files import data_path, eval_transform, require_augment, train_transform
from benchmark.datasets.images import ImageSpec
from benchmark.streams.base import Stream, class_incremental, register_stream

NUM_CLASSES = 100


@dataclass(frozen=True)
class SplitCifar100Params:
    data_dir: str = ""  # the folder holding cifar-100-python/; "" = $CL_BENCH_DATA or ./data
    download: bool = False  # let torchvision download the archive (163 MB) when the folder is missing
    n_tasks: int = 10  # tasks; must divide the 100 classes
    augment: str = "rrc_flip"  # train augmentation: none or rrc_flip
    shuffle: bool = True  # class order: seeded by the run (true) or CIFAR-100's own 0-99 (false)

    def __post_init__(self) -> None:
        require_folder(self.data_dir, "data_dir")
        require(1 <= self.n_tasks <= NUM_CLASSES and NUM_CLASSES % self.n_tasks == 0, "n_tasks",
                f"a divisor of the {NUM_CLASSES} classes", self.n_tasks)
        require_augment(self.augment)


@register_stream("split-cifar100", SplitCifar100Params)
def split_cifar100(params: SplitCifar100Params, *, seed: int, image_spec: ImageSpec) -> Stream:
    root = data_path(params.data_dir)
    train = load_cifar100(root, True, train_transform(image_spec, params.augment), params.download)
    test = load_cifar100(root, False, eval_transform(image_spec), download=False)  # the train call fetched it
    augmented = params.augment != "none"
    plain = None
    if augmented:  # the same train split under the eval pipeline: a shallow copy shares the decoded 150 MB array
        plain = copy.copy(train)
        plain.transform = eval_transform(image_spec)
    return class_incremental("split-cifar100", train, test, params.n_tasks, seed, train.classes,
                             shuffle=params.shuffle, augmented=augmented, plain=plain)
