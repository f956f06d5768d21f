"""Fashion-MNIST, the mini backbone's pre-training domain, from wherever it can be found.

Search order: Debian's `dataset-fashion-mnist` package (`/usr/share/datasets/fashion-mnist`, gzipped IDX files),
then torchvision's layout under the data folder (`<data_dir>/FashionMNIST/raw`), then torchvision's download.
The Debian files are unpacked into the data folder's torchvision layout, so every source is read by
`torchvision.datasets.FashionMNIST` itself.

`python -m benchmark.datasets.fashion_mnist [DATA_DIR]` makes sure the data is there (the Makefile's data step).
"""

from __future__ import annotations

import gzip
import os
import shutil
import sys
from pathlib import Path

import torch

from benchmark.errors import DatasetMissingError

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")


def default_data_dir() -> Path:
    """$CL_BENCH_DATA, else `data/` of the source checkout this module lies in (where `make data` puts it), else
    `data/` in the current folder (an installed package, which has no checkout around it)."""
    if "CL_BENCH_DATA" in os.environ:
        return Path(os.environ["CL_BENCH_DATA"])
    checkout = Path(__file__).resolve().parents[2]
    return checkout / "data" if (checkout / "pyproject.toml").is_file() else Path("data")


DEFAULT_DATA_DIR = default_data_dir()
RAW_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
CLASS_NAMES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
HOW_TO_GET = (
    "install Debian's package (`apt-get install dataset-fashion-mnist`), put the IDX files in "
    "{raw}, or allow the download (torchvision fetches it)"
)


def _raw_dir(data_dir: Path) -> Path:
    return data_dir / "FashionMNIST" / "raw"


def _unpack_debian(debian_dir: Path, raw_dir: Path) -> bool:
    """Unpack Debian's gzipped IDX files into torchvision's raw layout; False if the package is not there."""
    sources = [debian_dir / f"{name}.gz" for name in RAW_FILES]
    if not all(path.is_file() for path in sources):
        return False
    raw_dir.mkdir(parents=True, exist_ok=True)
    for source, name in zip(sources, RAW_FILES):
        target = raw_dir / name
        if not target.is_file():
            partial = target.with_suffix(".partial")
            with gzip.open(source, "rb") as src, open(partial, "wb") as dst:
                shutil.copyfileobj(src, dst)
            partial.replace(target)
    return True


def ensure_fashion_mnist(data_dir: Path = DEFAULT_DATA_DIR, debian_dir: Path = DEBIAN_DIR,
                         download: bool = True) -> Path:
    """Make Fashion-MNIST readable under `data_dir` and return that folder, or raise DatasetMissingError."""
    raw_dir = _raw_dir(data_dir)
    if all((raw_dir / name).is_file() for name in RAW_FILES) or _unpack_debian(debian_dir, raw_dir):
        return data_dir
    if download:
        from torchvision.datasets import FashionMNIST

        try:
            FashionMNIST(str(data_dir), train=True, download=True)
            FashionMNIST(str(data_dir), train=False, download=True)
            return data_dir
        except (OSError, RuntimeError):
            pass
    raise DatasetMissingError(f"Fashion-MNIST not found in {debian_dir} or {raw_dir}; " + HOW_TO_GET.format(raw=raw_dir))


def load_fashion_mnist(train: bool, data_dir: Path = DEFAULT_DATA_DIR, debian_dir: Path = DEBIAN_DIR,
                       download: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Images as float (N, 1, 28, 28) in [0, 1] and integer labels (N,)."""
    from torchvision.datasets import FashionMNIST

    root = ensure_fashion_mnist(Path(data_dir), Path(debian_dir), download)
    dataset = FashionMNIST(str(root), train=train, download=False)
    return dataset.data.unsqueeze(1).float().div_(255.0), dataset.targets.long()


def seeded_subset(labels: torch.Tensor, size: int, seed: int) -> torch.Tensor:
    """Indices of a seeded random subset of `size` items (all items, in a seeded order, if size exceeds them)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randperm(len(labels), generator=generator)[: min(size, len(labels))]


def main(argv: list[str]) -> int:
    data_dir = Path(argv[0]) if argv else DEFAULT_DATA_DIR
    try:
        root = ensure_fashion_mnist(data_dir)
    except DatasetMissingError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"Fashion-MNIST ready under {root}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
