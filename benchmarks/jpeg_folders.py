"""Generated JPEG class folders for the measurement scripts: `<root>/<class>/<n>.jpg`, torchvision's `ImageFolder`
layout (and one split of the prepared-folder benchmarks', `<folder>/{train,test}/<class>/<n>.jpg`).

Each image is a smooth random colour field with fine noise on top, saved at quality 90: its file size and decode
cost are those of a photo at that size (a flat colour would compress to nearly nothing and decode in no time;
white noise would be several times larger than a photo). Seeded: the same arguments write the same bytes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

QUALITY = 90


def write_class_folders(root: Path, classes: int, per_class: int, size: int, seed: int) -> None:
    """`classes` folders `c000`, `c001`, ... under `root`, each with `per_class` JPEG files of `size` x `size` pixels."""
    rng = np.random.default_rng(seed)
    for label in range(classes):
        folder = Path(root) / f"c{label:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        for index in range(per_class):
            coarse = rng.integers(0, 256, size=(4, 4, 3), dtype=np.uint8)
            field = np.asarray(Image.fromarray(coarse).resize((size, size), Image.BICUBIC), dtype=np.int16)
            noisy = field + rng.integers(-24, 25, size=field.shape, dtype=np.int16)
            Image.fromarray(noisy.clip(0, 255).astype(np.uint8)).save(folder / f"{index}.jpg", quality=QUALITY)
