"""Published train/test splits read from the list files reference codebases ship, so that numbers can be compared with
the papers that used the same split (ImageNet-R has no official split; every codebase draws its own).

Formats (`SPLIT_LIST_FORMATS`, chosen by a stream's `list_format`; `auto` picks by the file's suffix):
- `lines`: one image per line, its path first, then anything (a label) after whitespace: CPrompt's
  `data/datautils/imagenet-r/coda_train.txt` / `coda_test.txt` (`n02128757/sculpture_4.jpg 177`, CODA-Prompt's
  split re-exported), DomainNet's `<domain>_train.txt`.
- `coda-yaml`: CODA-Prompt's `dataloaders/splits/imagenet-r_train.yaml` / `_test.yaml`, a mapping whose `data` is
  the list of image paths (`data/imagenet-r/train/n02128757/sculpture_4.jpg`) and `targets` their labels.

A listed path is matched to the data set by its last two components, `<class folder>/<file>`: the codebases prefix
their own folders (CODA-Prompt's `data/imagenet-r/train/`, a train/test layout the archive does not have). The
labels in the lists are not used: a class is its folder, indexed like every other image of the suite (sorted wnids),
and the class order stays the run's seeded one. A run records the lists' paths, format and `split_sha256` (a hash
of both files' bytes) in its configuration, so two results share a split exactly when they share that hash.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable, Sequence

import yaml

from benchmark.config import require
from benchmark.datasets.files import LabelledFiles
from benchmark.errors import ConfigError, DatasetMissingError
from benchmark.registry import Registry

SPLIT_LIST_FORMATS: Registry[Callable[[Path], list[str]]] = Registry("split list format")
YAML_SUFFIXES = (".yaml", ".yml")


@SPLIT_LIST_FORMATS.register("lines")
def read_lines(path: Path) -> list[str]:
    """The first whitespace-separated field of every non-empty line."""
    return [line.split()[0] for line in path.read_text().splitlines() if line.strip()]


@SPLIT_LIST_FORMATS.register("coda-yaml")
def read_coda_yaml(path: Path) -> list[str]:
    """The `data` list of a CODA-Prompt split file (`targets`, its labels, must be as long)."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the published files hold 24,000 lines
    content = yaml.load(path.read_text(), Loader=loader)
    if not (isinstance(content, dict) and isinstance(content.get("data"), list)
            and len(content.get("targets", content["data"])) == len(content["data"])):
        raise DatasetMissingError(f"{path} is not a CODA-Prompt split file: expected a mapping with a `data` list of "
                                  "image paths and a `targets` list as long; or set list_format: lines")
    return [str(entry) for entry in content["data"]]


def list_format(path: Path, chosen: str) -> str:
    """The format of a list file: `chosen`, or by suffix when `auto` (.yaml / .yml: coda-yaml, else lines)."""
    if chosen != "auto":
        return chosen
    return "coda-yaml" if path.suffix.lower() in YAML_SUFFIXES else "lines"


def check_lists(train_list: str, test_list: str, chosen_format: str, pinned_sha256: str) -> str:
    """Config check of a stream's published-split fields: both lists or neither, files present, a known format,
    and the lists' hash equal to `pinned_sha256` when one is given. Returns the hash ("" without lists)."""
    require(bool(train_list) == bool(test_list), "train_list", "given together with test_list (or neither)",
            train_list or None)
    require(chosen_format == "auto" or chosen_format in SPLIT_LIST_FORMATS, "list_format",
            f"auto or one of {SPLIT_LIST_FORMATS.valid()}", chosen_format)
    if not train_list:
        require(not pinned_sha256, "split_sha256", "empty without train_list and test_list", pinned_sha256)
        return ""
    for key, value in (("train_list", train_list), ("test_list", test_list)):
        require(Path(value).is_file(), key, "an existing list file", value)
    digest = lists_sha256(Path(train_list), Path(test_list))
    if pinned_sha256 and pinned_sha256 != digest:
        raise ConfigError(f"split_sha256: the lists {train_list} and {test_list} hash to {digest}, not the pinned "
                          f"{pinned_sha256}; use the published files or drop the pin")
    return digest


def lists_sha256(train_list: Path, test_list: Path) -> str:
    """The first 16 hex digits of SHA-256 over both files' bytes (train, then test)."""
    digest = hashlib.sha256()
    for path in (train_list, test_list):
        content = path.read_bytes()
        digest.update(len(content).to_bytes(8, "little") + content)
    return digest.hexdigest()[:16]


def _listed_indices(files: LabelledFiles, listing: Path, entries: Sequence[str], root: Path) -> list[int]:
    """Positions in `files` of the listed images, matched by `<class folder>/<file>`."""
    position = {(p.parent.name, p.name): i for i, p in enumerate(files.paths)}
    indices = []
    for number, entry in enumerate(entries, start=1):
        key = tuple(Path(entry).parts[-2:])
        if len(key) != 2 or key not in position:
            raise DatasetMissingError(f"{listing}, entry {number}: {entry!r} names no image of {root} (matched by "
                                      "<class folder>/<file>); the list does not fit this copy of the data set")
        indices.append(position[key])
    if len(set(indices)) != len(indices):
        raise DatasetMissingError(f"{listing} lists an image twice; use the published file unchanged")
    return indices


def listed_split(files: LabelledFiles, root: Path, train_list: Path, test_list: Path,
                 chosen_format: str) -> tuple[list[int], list[int]]:
    """(train, test) positions in `files` (the data set's images under `root`) of the images the two lists name,
    each sorted; an image in both lists is an error."""
    train, test = (sorted(_listed_indices(files, path, SPLIT_LIST_FORMATS.get(list_format(path, chosen_format))(path),
                                          root)) for path in (train_list, test_list))
    shared = set(train) & set(test)
    if shared:
        raise DatasetMissingError(f"{files.paths[min(shared)]} is in both {train_list} and {test_list}; a split's "
                                  "train and test images must be disjoint")
    return train, test
