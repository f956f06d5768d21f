"""CIFAR-100 read by torchvision from `<root>/cifar-100-python` (the extracted python-version archive).

torchvision's `CIFAR100` keeps the 32x32 images as one uint8 array (150 MB for the train split) and builds a PIL
image per item, so the backbone's transform (e.g. resize to 224 px) runs on access and nothing is stored at the
backbone's resolution.

torchvision checks the md5 of the `train` and `test` files, and of `meta`, every time it opens the folder (not only
after a download), so a partial or altered copy is refused: that refusal becomes a one-line error saying to fetch
the archive again. Nothing is downloaded unless asked (`download=True`).
"""

from __future__ import annotations

from pathlib import Path

from torchvision.datasets import CIFAR100

from benchmark.datasets.files import Transform
from benchmark.errors import DatasetMissingError

HOW_TO_GET = (f"download {CIFAR100.url} and extract it in {{root}} (it unpacks to {CIFAR100.base_folder}/), "
              "or set the stream's `download: true`")


def load_cifar100(root: Path, train: bool, transform: Transform, download: bool = False) -> CIFAR100:
    """The train or test split of CIFAR-100 under `root`, items (transform(image), fine label); or a
    DatasetMissingError that says where it looked and how to get the data."""
    folder = root / CIFAR100.base_folder
    if not download and not folder.is_dir():
        raise DatasetMissingError(f"CIFAR-100 not found: no folder {folder}; " + HOW_TO_GET.format(root=root))
    try:
        return CIFAR100(str(root), train=train, transform=transform, download=download)
    except OSError as error:  # a failed download (no network: URLError) or an unreadable file
        raise DatasetMissingError(f"cannot read or download CIFAR-100 under {root} ({error}); "
                                  + HOW_TO_GET.format(root=root)) from None
    except RuntimeError:  # torchvision: "Dataset not found or corrupted", after its md5 checks
        raise DatasetMissingError(f"CIFAR-100 in {folder} is incomplete or fails torchvision's md5 check; delete the "
                                  "folder and " + HOW_TO_GET.format(root=root)) from None
