"""Shared fixtures: a small Fashion-MNIST in the real IDX format and a tiny vit-mini pre-trained through the real
script at toy size. Nothing here touches the network."""

from __future__ import annotations

import gzip
import struct
import warnings
from pathlib import Path

import numpy as np
import pytest
import yaml

warnings.filterwarnings("ignore", message="no QP solver found")  # Avalanche imports qpsolvers; see run_suite.py

from strategies import STRATEGIES  # noqa: E402  (importing it registers the built-in strategies)
from benchmark import pretrain  # noqa: E402
from benchmark.backbones import build_backbone  # noqa: E402
from benchmark.streams import build_stream  # noqa: E402

N_TRAIN, N_TEST = 400, 200


def builtin_strategies() -> list[str]:
    """Registered strategies shipped in strategies/ (tests register a few of their own)."""
    return sorted(n for n in STRATEGIES.names() if STRATEGIES.get(n).__module__.startswith("strategies."))


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write `array` (uint8) as a gzipped IDX file: magic (0, 0, 8 = ubyte, ndim), big-endian dims, data."""
    header = struct.pack(">BBBB", 0, 0, 8, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


def fake_fashion_images(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """28x28 images whose class decides which horizontal band is bright, plus noise: learnable, like real data."""
    images = rng.integers(0, 60, size=(len(labels), 28, 28))
    for i, label in enumerate(labels):
        images[i, 2 * label + 4: 2 * label + 8, 4:24] += 180
    return images.clip(0, 255)


@pytest.fixture(scope="session")
def fashion_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder laid out as Debian's dataset-fashion-mnist package (gzipped IDX files), small."""
    folder = tmp_path_factory.mktemp("fashion-mnist-debian")
    rng = np.random.default_rng(0)
    for prefix, size in (("train", N_TRAIN), ("t10k", N_TEST)):
        labels = np.arange(size) % 10
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", fake_fashion_images(labels, rng))
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return folder


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory, fashion_dir: Path) -> Path:
    """A two-block vit-mini pre-trained for one epoch by `python -m benchmark.pretrain` at toy size."""
    folder = tmp_path_factory.mktemp("tiny-vit")
    out = folder / "vit-tiny.safetensors"
    code = pretrain.main(["--epochs", "1", "--batch-size", "64", "--depth", "2", "--embed-dim", "32",
                          "--num-heads", "2", "--device", "cpu", "--debian-dir", str(fashion_dir),
                          "--data-dir", str(folder / "data"), "--out", str(out)])
    assert code == 0
    return out


@pytest.fixture(scope="session")
def tiny_backbone_params(tiny_checkpoint: Path, fashion_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    data_dir = tmp_path_factory.mktemp("data")
    return {"checkpoint": str(tiny_checkpoint), "debian_dir": str(fashion_dir), "data_dir": str(data_dir),
            "download": False}


@pytest.fixture
def write_suite(tmp_path: Path, tiny_backbone_params: dict):
    """Write a small suite YAML (tiny backbone, 1 epoch, small retention set) and return its path."""

    def write(strategies: dict | None = None, streams: dict | None = None, **extra) -> Path:
        suite = {
            "backbones": {"vit-mini": tiny_backbone_params},
            "streams": streams or {"mini-split-digits": {}},
            "strategies": strategies or {"full_ft": {"epochs": 1}, "linear": {"epochs": 1}},
            "retention": {"eval_size": 100},
            "device": "cpu",
            "precision": "fp32",  # the same numbers on every CPU (`auto` picks bf16 where it is native)
            **extra,
        }
        path = tmp_path / "suite.yaml"
        path.write_text(yaml.safe_dump(suite))
        return path

    return write


@pytest.fixture(scope="session")
def backbone(tiny_backbone_params: dict):
    """The tiny vit-mini, loaded once; tests give strategies a deep copy of its model."""
    return build_backbone("vit-mini", **tiny_backbone_params)


@pytest.fixture(scope="session")
def stream(backbone):
    """mini-split-digits (5 tasks x 2 digits), seed 1993, in the tiny backbone's input format."""
    return build_stream("mini-split-digits", 1993, image_spec=backbone.image_spec)
