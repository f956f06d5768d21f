"""Any data set laid out as `<root>/<domain>/<class>/<image>` (DomainNet's layout: clipart, infograph, painting,
quickdraw, real, sketch, each with the same 345 class folders).

- Classes: the union of the class folder names over the domains read, sorted (class index = position). A domain
  that lacks a class folder is fine: that class has no images in that domain.
- Hidden entries and non-image files are ignored, so lists and READMEs may lie beside the folders.
- DomainNet ships train/test lists, `<root>/<domain>_train.txt` and `<domain>_test.txt`, one `<domain>/<class>/<file>
  <label>` per line; with `read_lists`, where both lists of a domain exist they are read too (`Domain.listed`). The
  label column is not used: the class is the line's folder, indexed like every other image.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from benchmark.config import require
from benchmark.datasets.files import LabelledFiles, image_files, sub_folders
from benchmark.errors import DatasetMissingError

LAYOUT = "<root>/<domain>/<class>/<image>"


@dataclass(frozen=True)
class Domain:
    """One domain's images, and its train/test lists where the data set ships them."""

    files: LabelledFiles  # every image in the domain's class folders, sorted by path
    listed: tuple[LabelledFiles, LabelledFiles] | None = None  # (train, test) from <domain>_{train,test}.txt


def _read_list(root: Path, listing: Path, domain: str, label_of: dict[str, int]) -> LabelledFiles:
    """A DomainNet list: `<domain>/<class>/<file> [label]` per line, paths relative to the root."""
    paths, labels = [], []
    for number, line in enumerate(listing.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        relative = Path(line.split()[0])
        if len(relative.parts) != 3 or relative.parts[0] != domain or relative.parts[1] not in label_of:
            raise DatasetMissingError(f"{listing}, line {number}: expected `{domain}/<class>/<file>` with a class "
                                      f"folder of {root / domain}, got {str(relative)!r}")
        paths.append(root / relative)
        labels.append(label_of[relative.parts[1]])
    return LabelledFiles(tuple(paths), tuple(labels))


def load_domain_folders(root: Path, domains: Sequence[str] = (),
                        read_lists: bool = True) -> tuple[tuple[str, ...], dict[str, Domain]]:
    """(class names, domain name -> Domain) for `domains` (default: every domain folder, sorted), in that order;
    a missing root or a wrong layout is a one-line DatasetMissingError, an unknown domain a ConfigError."""
    if not root.is_dir():
        raise DatasetMissingError(f"no folder {root}; expected {LAYOUT}")
    available = [p.name for p in sub_folders(root, "domain", LAYOUT)]
    chosen = list(domains) or available
    require(set(chosen) <= set(available), "domains", f"folders of {root}: {', '.join(available)}", list(domains))
    class_folders = {domain: sub_folders(root / domain, "class", LAYOUT) for domain in chosen}
    classes = tuple(sorted({folder.name for folders in class_folders.values() for folder in folders}))
    label_of = {name: label for label, name in enumerate(classes)}
    result = {}
    for domain, folders in class_folders.items():
        paths = tuple(path for folder in folders for path in image_files(folder))
        if not paths:
            raise DatasetMissingError(f"domain folder {root / domain} holds no images; expected {LAYOUT}")
        lists = root / f"{domain}_train.txt", root / f"{domain}_test.txt"
        listed = (tuple(_read_list(root, listing, domain, label_of) for listing in lists)
                  if read_lists and all(listing.is_file() for listing in lists) else None)
        result[domain] = Domain(LabelledFiles(paths, tuple(label_of[path.parent.name] for path in paths)), listed)
    return classes, result
