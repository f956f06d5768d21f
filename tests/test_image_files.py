"""The image-file pipeline (benchmark/datasets/files.py) on JPEGs the test writes: torchvision's `decode_jpeg` gives
PIL's pixels, the uint8 tensor transforms give timm's PIL pipelines' images within RESIZE_TOLERANCE_LEVELS and draw
what they draw, grey levels are PIL's; a missing or damaged file is one line naming it. The generated class folders
(benchmarks/jpeg_folders.py) are deterministic and read as `ImageFolder` reads them."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from timm.data import create_transform
from torchvision.datasets import ImageFolder
from torchvision.transforms.functional import pil_to_tensor

from benchmark.datasets.class_folders import scan_split_folders
from benchmark.datasets.files import (RESIZE_TOLERANCE_LEVELS, eval_transform, gray_levels, load_rgb, read_rgb,
                                     train_transform)
from benchmark.datasets.images import ImageSpec
from benchmark.errors import DatasetMissingError

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.jpeg_folders import write_class_folders  # noqa: E402

SPEC = ImageSpec(input_size=(3, 48, 48), mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3), interpolation="bicubic",
                 crop_pct=0.9)


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_class_folders(tmp_path_factory.mktemp("jpegs"), classes=3, per_class=2, size=56, seed=0)


def jpeg(tmp_path: Path, name: str, mode: str = "RGB", **options) -> Path:
    """A photo-like JPEG (gradients and noise) saved with PIL's `options` (subsampling, progressive)."""
    rng = np.random.default_rng(len(name))
    x, y = np.meshgrid(np.linspace(0, 255, 61), np.linspace(0, 255, 45))
    pixels = np.stack([x, y, (x + y) / 2], axis=-1) + rng.normal(0, 20, (45, 61, 3))
    path = tmp_path / name
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).convert(mode).save(path, quality=90, **options)
    return path


def test_decode_jpeg_gives_pils_pixels(tmp_path):
    """4:2:0 and 4:4:4 chroma, progressive, greyscale JPEGs, and a PNG (PIL's path): the same uint8 RGB pixels."""
    paths = [jpeg(tmp_path, "420.jpg"), jpeg(tmp_path, "444.jpg", subsampling=0),
             jpeg(tmp_path, "progressive.jpg", progressive=True), jpeg(tmp_path, "grey.jpg", mode="L")]
    Image.open(paths[0]).save(tmp_path / "lossless.png")
    for path in paths + [tmp_path / "lossless.png"]:
        ours = read_rgb(path)
        assert ours.dtype == torch.uint8 and ours.shape == (3, 45, 61)
        assert torch.equal(ours, pil_to_tensor(load_rgb(path))), path.name


def test_missing_and_damaged_files_are_one_line_errors(tmp_path):
    with pytest.raises(DatasetMissingError, match="missing.jpg is missing"):
        read_rgb(tmp_path / "missing.jpg")
    damaged = tmp_path / "damaged.jpg"
    damaged.write_bytes(b"\xff\xd8\xff\xe0" + b"not a jpeg" * 10)
    with pytest.raises(DatasetMissingError, match="cannot decode image .*damaged.jpg"):
        read_rgb(damaged)


def test_grey_levels_are_pils_luma_conversion():
    rgb = torch.randint(0, 256, (3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    pil = Image.fromarray(rgb.permute(1, 2, 0).numpy())
    assert torch.equal(gray_levels(rgb), pil_to_tensor(pil.convert("L")))


def within_tolerance(ours: torch.Tensor, theirs: torch.Tensor) -> bool:
    levels = (ours - theirs).abs() * torch.tensor(SPEC.std).view(3, 1, 1) * 255
    return ours.shape == theirs.shape and float(levels.max()) <= RESIZE_TOLERANCE_LEVELS + 1e-3


def test_tensor_pipelines_give_timms_pil_images_and_draw_what_it_draws(folders):
    """Eval: timm's PIL transform's tensor; train: a sequence of images from one seed (no reseeding between them)
    gives timm's crops and flips, and leaves the generators where timm's pipeline leaves them."""
    files = sorted((folders / "train").rglob("*.jpg"))
    timm_eval = create_transform(SPEC.input_size, interpolation="bicubic", mean=SPEC.mean, std=SPEC.std, crop_pct=0.9)
    timm_train = create_transform(SPEC.input_size, is_training=True, interpolation="bicubic", mean=SPEC.mean,
                                  std=SPEC.std, hflip=0.5, color_jitter=0.0)
    for path in files:
        assert within_tolerance(eval_transform(SPEC)(read_rgb(path)), timm_eval(load_rgb(path)))
    ours, runs = train_transform(SPEC, "rrc_flip"), []
    for transform, read in ((ours, read_rgb), (timm_train, load_rgb)):
        random.seed(3)
        torch.manual_seed(3)
        runs.append(([transform(read(path)) for path in files], random.random(), float(torch.rand(1))))
    assert all(within_tolerance(a, b) for a, b in zip(runs[0][0], runs[1][0]))
    assert runs[0][1:] == runs[1][1:]
    assert eval_transform(SPEC)(load_rgb(files[0])).shape == (3, 48, 48)  # a PIL image (CIFAR-100's) works too


def test_generated_folders_are_deterministic_and_read_as_imagefolder_reads_them(folders, tmp_path):
    again = write_class_folders(tmp_path, classes=3, per_class=2, size=56, seed=0)
    names = sorted(p.relative_to(folders) for p in folders.rglob("*.jpg"))
    assert len(names) == 12 and names == sorted(p.relative_to(again) for p in again.rglob("*.jpg"))
    assert all((folders / name).read_bytes() == (again / name).read_bytes() for name in names)
    found = scan_split_folders(folders)
    reference = ImageFolder(str(folders / "train"))
    assert [str(p) for p in found.train.paths] == [path for path, _ in reference.samples]
    assert list(found.train.labels) == reference.targets == [0, 0, 1, 1, 2, 2]
    with pytest.raises(ValueError, match="per_class >= 1"):
        write_class_folders(tmp_path / "none", classes=3, per_class=0, size=56, seed=0)
