"""Benchmarks shipped as prepared train/test class folders, `<root>/<folder>/train/<class>/<image>` and
`<root>/<folder>/test/<class>/<image>`: the archives Zhou et al. prepared for RevisitingCIL (IJCV 2024), which
RanPAC, LAMDA-PILOT, EASE, MOS and TUNA read from the same folders with torchvision's `ImageFolder`
(zhoudw-zdw/RevisitingCIL@a2e6b71 utils/data.py:198-305; RanPAC/RanPAC@012927f utils/data.py:102-199).

- Classes: the class folders of `train/`, sorted in Python's string order (`ImageFolder.find_classes`: class index =
  position, so folders named 0..49 sort 0, 1, 10, 11, ...); `test/` must hold the same class folders (the
  reference indexes each split on its own, so a class missing from one would shift every later label).
- Images: the image files directly in a class folder, sorted; hidden entries (`.DS_Store`, `._*`) and other files
  are ignored. `ImageFolder` would also read sub-folders and hidden files and .ppm/.pgm/.tif files (and not .gif);
  the archives hold none of these, and a copy that does shows it in its manifest.
- Every file set has a manifest (benchmark/datasets/manifests.py): `cl-bench manifest FOLDER` writes it.

Where to get each archive, its md5 and the splits the papers run on it: docs/benchmarks.md.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from benchmark.datasets.files import LabelledFiles, class_files, sub_folders
from benchmark.datasets.manifests import SPLITS, Manifest, write_manifest
from benchmark.errors import EXIT_BAD_INPUT, ArgumentParser, DatasetMissingError, UserInputError

LAYOUT = "<folder>/train/<class>/<image> and <folder>/test/<class>/<image>"


@dataclass(frozen=True)
class FolderBenchmark:
    """One benchmark's prepared archive: the folder the reference code reads, its classes, where to get it."""

    name: str  # as the papers write it
    folder: str  # `./data/<folder>/` in the reference's utils/data.py
    num_classes: int  # the reference's `class_order = np.arange(num_classes)`
    archive: str  # the file the README links to (Google Drive / OneDrive), with its md5 (RevisitingCIL issue #5)
    md5: str

    def how_to_get(self, root: Path) -> str:
        return (f"download {self.archive} (md5 {self.md5}; links in docs/benchmarks.md) and unpack it so that "
                f"{root / self.folder}/train/<class>/ and {root / self.folder}/test/<class>/ exist")


# RevisitingCIL@a2e6b71 utils/data.py:205/209 (imagenet-a), 227/231 (cub), 248/252 (objectnet), 269/273
# (omnibenchmark), 291/295 (vtab); archives and md5 sums: its README.md:84-89 and LAMDA-CL/RevisitingCIL issue #5.
IMAGENET_A = FolderBenchmark("ImageNet-A", "imagenet-a", 200, "ina.zip", "7f4aaf0b1532b7a0bd670822c152d3c5")
CUB200 = FolderBenchmark("CUB-200", "cub", 200, "cub.zip", "85e342a2d5f941e740193602057df7a5")
OBJECTNET = FolderBenchmark("ObjectNet", "objectnet", 200, "objnet.tgz", "63ff7443a47bd682016a8ec59b8cc1bc")
OMNIBENCHMARK = FolderBenchmark("OmniBenchmark", "omnibenchmark", 300, "omnibenchmark.zip",
                                "f1c30808a707f9197c6c811ea52e5cbb")
VTAB = FolderBenchmark("VTAB", "vtab", 50, "vtab.zip", "a9c37bde6105a2516c900b0c33a437c1")


@dataclass(frozen=True)
class SplitFolders:
    """A benchmark folder's images: the class names, the train and test files, and the manifest of both."""

    classes: tuple[str, ...]
    train: LabelledFiles
    test: LabelledFiles
    manifest: Manifest


def _same_classes(train: Sequence[Path], test: Sequence[Path], folder: Path) -> None:
    """train/ and test/ must hold the same class folders."""
    train_names, test_names = {p.name for p in train}, {p.name for p in test}
    if train_names != test_names:
        only_train, only_test = sorted(train_names - test_names), sorted(test_names - train_names)
        parts = [f"{len(only_train)} only in train/ (first: {only_train[0]})" if only_train else "",
                 f"{len(only_test)} only in test/ (first: {only_test[0]})" if only_test else ""]
        raise DatasetMissingError(f"the class folders of {folder / 'train'} and {folder / 'test'} differ: "
                                  f"{'; '.join(p for p in parts if p)}; every class needs train and test images")


def scan_split_folders(folder: Path) -> SplitFolders:
    """Read `folder`/train and `folder`/test; a missing split folder or a wrong layout is a one-line
    DatasetMissingError that shows the expected layout."""
    layout = LAYOUT.replace("<folder>", str(folder))
    for split in SPLITS:
        if not (folder / split).is_dir():
            raise DatasetMissingError(f"no folder {folder / split}; expected {layout}")
    train_classes, test_classes = (sub_folders(folder / split, "class", layout) for split in SPLITS)
    _same_classes(train_classes, test_classes, folder)
    train = class_files(train_classes, layout)
    test = class_files([folder / "test" / p.name for p in train_classes], layout)
    return SplitFolders(tuple(p.name for p in train_classes), train, test,
                        Manifest.of(train.paths + test.paths, folder))


def load_benchmark(root: Path, benchmark: FolderBenchmark) -> SplitFolders:
    """`benchmark`'s folder under `root`, read and checked to hold its number of classes."""
    folder = root / benchmark.folder
    if not folder.is_dir():
        raise DatasetMissingError(f"{benchmark.name} not found: no folder {folder}; " + benchmark.how_to_get(root))
    found = scan_split_folders(folder)
    if len(found.classes) != benchmark.num_classes:
        raise DatasetMissingError(f"{folder / 'train'} holds {len(found.classes)} class folders, but {benchmark.name} "
                                  f"has {benchmark.num_classes}; " + benchmark.how_to_get(root))
    return found


def main(argv: Sequence[str]) -> int:
    """`cl-bench manifest FOLDER [--out FILE]`: write (or print) the split manifest of a benchmark folder; bad input
    is one line on stderr, exit 2, nothing written."""
    parser = ArgumentParser(prog="cl-bench manifest", description="Write the split manifest of a benchmark folder "
                            f"laid out as {LAYOUT.replace('<folder>', 'FOLDER')}.")
    parser.add_argument("folder", type=Path, help="the benchmark folder, e.g. data/imagenet-a")
    parser.add_argument("--out", type=Path, help="the manifest file to write (default: print it)")
    try:
        args = parser.parse_args(list(argv))
        if args.out is not None and (args.out.is_dir() or not args.out.parent.is_dir()):
            raise UserInputError(f"--out {args.out}: give a file name in an existing folder")
        found = scan_split_folders(args.folder)
        write_manifest(found.manifest, args.out)
    except UserInputError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as error:  # a folder we may not write to
        print(f"error: cannot write {args.out} ({error.strerror or error})", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.out is not None:
        print(f"{args.out}: {len(found.manifest.paths)} files in {len(found.classes)} classes, "
              f"sha256 {found.manifest.sha256}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
