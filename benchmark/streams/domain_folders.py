"""`domain-folders`: a domain-incremental stream over any data set laid out as `<root>/<domain>/<class>/<image>`
(DomainNet's layout; reading: benchmark/datasets/domain_folders.py).

One task per domain in the order of `domains` (default: every domain folder, sorted by name); every task has all
classes as outputs (the union of the class folders over the chosen domains, sorted; a domain may lack some). Each
domain is split on its own: by DomainNet's lists `<root>/<domain>_train.txt` / `_test.txt` where both exist and
`listed_split` is true, otherwise by a seeded random split (`test_fraction`, `split_seed`) that does not move with
the run's seed. Train images go through `augment`, test images through the backbone's eval pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from benchmark.config import require, require_folder
from benchmark.datasets.domain_folders import LAYOUT, Domain, load_domain_folders
from benchmark.datasets.files import Splits, as_datasets, require_augment, require_test_fraction, split_datasets
from benchmark.datasets.images import ImageSpec
from benchmark.streams.base import Stream, domain_incremental, register_stream


@dataclass(frozen=True)
class DomainFoldersParams:
    root: str = ""  # required: the folder holding <domain>/<class>/<image>
    domains: tuple[str, ...] = ()  # task order; empty = every domain folder, sorted
    test_fraction: float = 0.2  # share of each domain's images held out for testing (random split)
    split_seed: int = 0  # fixes the random split across runs
    listed_split: bool = True  # use <root>/<domain>_train.txt and _test.txt where both exist (DomainNet's split)
    augment: str = "rrc_flip"  # train augmentation: none or rrc_flip

    def __post_init__(self) -> None:
        require(self.root != "", "root", f"the folder laid out as {LAYOUT}", self.root)
        require_folder(self.root, "root")
        require(len(set(self.domains)) == len(self.domains), "domains", "distinct folder names", list(self.domains))
        require_test_fraction(self.test_fraction)
        require_augment(self.augment)


def domain_datasets(domain: Domain, params: DomainFoldersParams, spec: ImageSpec) -> Splits:
    """A domain's (train, test): its shipped lists where read, else the seeded split."""
    if domain.listed is not None:
        return as_datasets(*domain.listed, spec, params.augment)
    return split_datasets([domain.files], params.test_fraction, params.split_seed, spec, params.augment)


@register_stream("domain-folders", DomainFoldersParams)
def domain_folders(params: DomainFoldersParams, *, seed: int, image_spec: ImageSpec) -> Stream:
    """Domain order is fixed by `domains`; the seed only matters for training."""
    classes, domains = load_domain_folders(Path(params.root), params.domains, params.listed_split)
    return domain_incremental("domain-folders", {name: domain_datasets(domain, params, image_spec)
                                                 for name, domain in domains.items()},
                              classes, augmented=params.augment != "none")
