"""Generated JPEG class folders for measurements: `<root>/train/<class>/<i>.jpg` and `<root>/test/<class>/<i>.jpg`,
the layout of the prepared-folder benchmarks (benchmark/datasets/class_folders.py) and of torchvision's
`ImageFolder`, so the suite's streams and a bare torchvision pipeline read the same files.

Each class has its own colour and stripe frequency and each image its own phase, orientation and noise, so the
files have a natural photo's mix of smooth areas and detail (their JPEG decode costs what a photo of that size
costs, unlike flat colour or pure noise) and a classifier can learn the classes. Quality 90, 4:2:0 chroma
subsampling: what PIL writes by default above quality 75, as most photo archives are stored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
from PIL import Image

SPLITS = ("train", "test")
QUALITY = 90


def class_name(label: int) -> str:
    """Folder names that sort in label order (`ImageFolder` and the suite index classes by sorted name)."""
    return f"c{label:04d}"


def make_image(rng: np.random.Generator, label: int, size: int) -> Image.Image:
    """A size x size RGB image of class `label`: class colour x oriented stripes of the class's frequency, plus
    noise."""
    y, x = np.mgrid[0:size, 0:size] / size
    angle = rng.uniform(0, np.pi)
    frequency = 2 + (label % 7) * 1.5
    stripes = 0.5 + 0.5 * np.sin(2 * np.pi * frequency * (x * np.cos(angle) + y * np.sin(angle)) + rng.uniform(0, 6))
    colour = np.random.default_rng(label).uniform(40, 215, size=3)
    pixels = colour * (0.6 + 0.4 * stripes[..., None]) + rng.normal(0, 12, size=(size, size, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def write_class_folders(root: Path, classes: int, per_class: int, size: int, seed: int,
                        splits: tuple[str, ...] = SPLITS, test_per_class: Optional[int] = None) -> Path:
    """Write `per_class` JPEGs of size x size pixels per class into `root`/<split>/<class>/ for each of `splits`
    (`test_per_class`, if given, for the split named "test"); the same arguments write the same bytes. Returns
    `root`."""
    if classes < 1 or per_class < 1 or size < 8:
        raise ValueError(f"need classes >= 1, per_class >= 1 and size >= 8, got {classes}, {per_class}, {size}")
    rng = np.random.default_rng(seed)
    for split in splits:
        count = test_per_class if split == "test" and test_per_class is not None else per_class
        for label in range(classes):
            folder = root / split / class_name(label)
            folder.mkdir(parents=True, exist_ok=True)
            for index in range(count):
                make_image(rng, label, size).save(folder / f"{index:05d}.jpg", quality=QUALITY)
    return root
