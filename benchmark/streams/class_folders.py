"""The prepared-folder benchmarks as class-incremental streams (data: benchmark/datasets/class_folders.py,
`<data_dir>/<folder>/{train,test}/<class>/<image>`): one builder, registered once per benchmark with the split the
published tables run as its default.

| stream | folder | classes | default | split | as in |
| --- | --- | --- | --- | --- | --- |
| `split-imagenet-a` | imagenet-a | 200 | 10 tasks | B0-Inc20 | EASE exps/ease_ina*.json, RanPAC imageneta_publish.csv |
| `split-cub200` | cub | 200 | 20 tasks | B0-Inc10 | EASE exps/ease_cub*.json, RevisitingCIL exps/*/cub_10_10_*.json |
| `split-objectnet` | objectnet | 200 | 20 tasks | B0-Inc10 | EASE exps/ease_obj*.json, RevisitingCIL objectnet_10_10 |
| `split-omnibenchmark` | omnibenchmark | 300 | 10 tasks | B0-Inc30 | RevisitingCIL omni_30_30, EASE, RanPAC |
| `split-vtab` | vtab | 50 | 5 tasks, `shuffle: false` | B0-Inc10 | RevisitingCIL vtab_10_10, EASE, MOS, RanPAC |

Other splits of the papers: `n_tasks` (RevisitingCIL's ImageNet-A B0-Inc10 is `n_tasks: 20`; RanPAC's CUB B0-Inc20
is `n_tasks: 10`; MOS's logged ObjectNet and OmniBenchmark runs, B0-Inc20, are `n_tasks: 10` and `15`; sources:
docs/benchmarks.md); `n_tasks` must divide the classes (every B0 split of these tables does). Class order: seeded by
the run (`np.random.seed(seed)` permutation, the references' with seed 1993), or with `shuffle: false` the sorted
class folders' (RevisitingCIL README.md:96: VTAB must run unshuffled, so that its tasks are its five source data
sets in the archive's order).

The train/test split is the archive's; `manifest` names a manifest file (`cl-bench manifest FOLDER`) the folder must
match, `manifest_sha256` pins its digest (filled in from the manifest, recorded with the run); every result records
the digest of the files the run read. Train images go through `augment`, test images through the backbone's eval
pipeline (or the strategy's recipe's).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

from benchmark.config import require, require_folder
from benchmark.datasets.class_folders import (CUB200, IMAGENET_A, OBJECTNET, OMNIBENCHMARK, VTAB, FolderBenchmark,
                                              load_benchmark)
from benchmark.datasets.files import as_datasets, data_path, require_augment
from benchmark.datasets.images import ImageSpec
from benchmark.datasets.manifests import check_manifest, require_match
from benchmark.streams.base import Stream, class_incremental, register_stream


@dataclass(frozen=True)
class ClassFoldersParams:
    benchmark: ClassVar[FolderBenchmark]  # set by each benchmark's subclass (`register_benchmark`)
    stream: ClassVar[str]

    data_dir: str = ""  # the folder holding the benchmark's folder; "" = $CL_BENCH_DATA or ./data
    n_tasks: int = 10  # tasks of equal size; each benchmark defaults to its published split
    shuffle: bool = True  # class order: seeded by the run (true) or the sorted class folders' (false)
    augment: str = "rrc_flip"  # train augmentation: none or rrc_flip
    manifest: str = ""  # a manifest file the folder must match; "" = none
    manifest_sha256: str = ""  # the manifest's digest, filled in and recorded with the run; set it to pin the files

    def __post_init__(self) -> None:
        require_folder(self.data_dir, "data_dir")
        classes = self.benchmark.num_classes
        require(1 <= self.n_tasks <= classes and classes % self.n_tasks == 0, "n_tasks",
                f"a divisor of {self.benchmark.name}'s {classes} classes", self.n_tasks)
        require_augment(self.augment)
        object.__setattr__(self, "manifest_sha256", check_manifest(self.manifest, self.manifest_sha256))


def split_class_folders(params: ClassFoldersParams, *, seed: int, image_spec: ImageSpec) -> Stream:
    """The benchmark's archive split into `n_tasks` class-incremental tasks; refuses a folder that does not match
    the configured manifest."""
    root = data_path(params.data_dir)
    found = load_benchmark(root, params.benchmark)
    require_match(found.manifest, root / params.benchmark.folder, params.manifest, params.manifest_sha256)
    splits = as_datasets(found.train, found.test, image_spec, params.augment)
    stream = class_incremental(params.stream, splits.train, splits.test, params.n_tasks, seed, found.classes,
                               shuffle=params.shuffle, augmented=params.augment != "none", plain=splits.plain)
    return dataclasses.replace(stream, manifest_sha256=found.manifest.sha256)


def register_benchmark(stream: str, benchmark: FolderBenchmark, n_tasks: int, shuffle: bool = True) -> None:
    """Register `benchmark` as `stream`, built by `split_class_folders`, its parameters (a ClassFoldersParams
    subclass) defaulting to the published split."""
    name = "".join(part.capitalize() for part in stream.split("-")) + "Params"  # SplitImagenetAParams
    namespace = {"__module__": __name__, "__qualname__": name, "__annotations__": {"n_tasks": int, "shuffle": bool},
                 "n_tasks": n_tasks, "shuffle": shuffle, "benchmark": benchmark, "stream": stream}
    params = dataclass(frozen=True)(type(name, (ClassFoldersParams,), namespace))
    register_stream(stream, params)(split_class_folders)


register_benchmark("split-imagenet-a", IMAGENET_A, n_tasks=10)  # B0-Inc20
register_benchmark("split-cub200", CUB200, n_tasks=20)  # B0-Inc10
register_benchmark("split-objectnet", OBJECTNET, n_tasks=20)  # B0-Inc10
register_benchmark("split-omnibenchmark", OMNIBENCHMARK, n_tasks=10)  # B0-Inc30
register_benchmark("split-vtab", VTAB, n_tasks=5, shuffle=False)  # B0-Inc10, tasks = its five data sets in order
