"""ImageNet-R (Hendrycks et al., 2021): 30,000 renditions (art, cartoons, sculptures, ...) of 200 ImageNet classes,
laid out as `<root>/imagenet-r/<wnid>/<rendition>_<n>.jpg`.

- Classes: the wnid folders in sorted order (class index = position), named by their wnid.
- Rendition of an image: its file name before the last `_` (`deviantart_12.jpg` -> deviantart). Not every class
  has every rendition.
- The archive ships no train/test split; prompt-based continual-learning papers (DualPrompt, CODA-Prompt) draw a
  random 80/20 split. Here the split is `LabelledFiles.split`: seeded, reproducible, and independent of the order in
  which the file system lists the files.

`download=True` fetches the archive (2.1 GB) with torchvision's `download_and_extract_archive`, which shows a
progress bar, checks the archive's md5, extracts it under the root and keeps `imagenet-r.tar` there (a present tar
with the right md5 is extracted without downloading; delete it afterwards to save space).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from torchvision.datasets.utils import download_and_extract_archive

from benchmark.datasets.files import LabelledFiles, class_files, sub_folders
from benchmark.errors import DatasetMissingError

URL = "https://people.eecs.berkeley.edu/~hendrycks/imagenet-r.tar"
MD5 = "a61312130a589d0ca1a8fca1f2bd3337"  # lower-case: torchvision compares it with hashlib's hexdigest
FOLDER = "imagenet-r"
LAYOUT = "<root>/imagenet-r/<wnid>/<rendition>_<n>.jpg"
RENDITIONS = ("art", "cartoon", "deviantart", "embroidery", "graffiti", "graphic", "misc", "origami", "painting",
              "sculpture", "sketch", "sticker", "tattoo", "toy", "videogame")
HOW_TO_GET = (f"download {URL} and extract it in {{root}} (it unpacks to {FOLDER}/), "
              "or set the stream's `download: true`")


@dataclass(frozen=True)
class ImagenetR:
    """Every image of the data set with its class and rendition."""

    files: LabelledFiles  # sorted by path
    renditions: tuple[str, ...]  # the rendition of each file
    wnids: tuple[str, ...]  # class names: the wnid of each class index

    def of_renditions(self, names: Iterable[str]) -> LabelledFiles:
        """The files whose rendition is in `names`."""
        wanted = set(names)
        return self.files.subset([i for i, rendition in enumerate(self.renditions) if rendition in wanted])


def rendition_of(path: Path) -> str:
    """The rendition named by a file's prefix before the last `_`; a name without one is a layout error."""
    prefix, underscore, _ = path.stem.rpartition("_")
    if not underscore or not prefix:
        raise DatasetMissingError(f"ImageNet-R file {path} has no `<rendition>_` prefix; expected {LAYOUT}")
    return prefix


def ensure_imagenet_r(root: Path, download: bool) -> Path:
    """The `imagenet-r` folder under `root`, downloaded and extracted first if asked and missing."""
    folder = root / FOLDER
    if folder.is_dir():
        return folder
    if not download:
        raise DatasetMissingError(f"ImageNet-R not found: no folder {folder}; " + HOW_TO_GET.format(root=root))
    try:
        download_and_extract_archive(URL, str(root), filename=f"{FOLDER}.tar", md5=MD5)
    except (OSError, RuntimeError) as error:  # no network (URLError), a bad md5 (RuntimeError), a bad archive
        raise DatasetMissingError(f"cannot download ImageNet-R to {root} ({error}); "
                                  + HOW_TO_GET.format(root=root)) from None
    if not folder.is_dir():
        raise DatasetMissingError(f"the ImageNet-R archive did not unpack to {folder}; " + HOW_TO_GET.format(root=root))
    return folder


def load_imagenet_r(root: Path, download: bool = False) -> ImagenetR:
    """Scan `<root>/imagenet-r`: one class per wnid folder (sorted), one image per file; raise a one-line
    DatasetMissingError for a missing folder or a wrong layout."""
    folder = ensure_imagenet_r(root, download)
    wnids = sub_folders(folder, "class", LAYOUT)
    files = class_files(wnids, LAYOUT)
    renditions = tuple(rendition_of(path) for path in files.paths)
    return ImagenetR(files, renditions, tuple(p.name for p in wnids))
