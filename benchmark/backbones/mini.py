"""vit-mini: a small ViT pre-trained on Fashion-MNIST by this project (`python -m benchmark.pretrain`), the backbone
of the mini benchmark, whose weights ship with the repository."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import timm
from timm.data import resolve_data_config
from torch import nn

from benchmark.backbones.base import WEIGHTS_ERRORS, Backbone, PretrainEvalSet, one_line, register_backbone
from benchmark.config import require, require_folder
from benchmark.datasets.fashion_mnist import (CLASS_NAMES, DEBIAN_DIR, DEFAULT_DATA_DIR, load_fashion_mnist,
                                             seeded_subset)
from benchmark.datasets.images import ImageSpec, to_backbone_input
from benchmark.errors import ConfigError

ASSETS = Path(__file__).resolve().parent.parent / "assets"
VIT_MINI_CHECKPOINT = ASSETS / "vit-mini.safetensors"

# vit-mini: ViT-Tiny's width and heads, 6 blocks, on 28x28 grey-scale input (Fashion-MNIST's own size) in 4x4 patches:
# 2.7 M parameters, 49 patches + the class token.
VIT_MINI_ARCH: dict[str, Any] = dict(
    img_size=28, patch_size=4, in_chans=1, embed_dim=192, depth=6, num_heads=3, num_classes=len(CLASS_NAMES)
)
VIT_MINI_IMAGE = dict(input_size=(1, 28, 28), mean=(0.2860,), std=(0.3530,), interpolation="bilinear")


@dataclass(frozen=True)
class VitMiniParams:
    """Paths default to "" so that a run's identity does not depend on where the repository lies."""

    checkpoint: str = ""  # safetensors file from `python -m benchmark.pretrain`; "" = the bundled one
    data_dir: str = ""  # where Fashion-MNIST is (or is unpacked / downloaded to); "" = $CL_BENCH_DATA or ./data
    debian_dir: str = str(DEBIAN_DIR)  # Debian's dataset-fashion-mnist package
    download: bool = True  # let torchvision download Fashion-MNIST if it is nowhere on disk

    def __post_init__(self) -> None:
        require(Path(self.checkpoint_path).is_file(), "checkpoint",
                "an existing file (regenerate it with `python -m benchmark.pretrain`)", self.checkpoint_path)
        require_folder(self.data_dir, "data_dir", writable=True)  # Fashion-MNIST is unpacked or downloaded into it
        require_folder(self.debian_dir, "debian_dir")

    @property
    def checkpoint_path(self) -> str:
        return self.checkpoint or str(VIT_MINI_CHECKPOINT)

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir) if self.data_dir else DEFAULT_DATA_DIR


def create_vit_mini(checkpoint: str | None, arch: Mapping[str, Any] = VIT_MINI_ARCH) -> nn.Module:
    """The vit-mini architecture; with a checkpoint, weights are loaded through timm's own pretrained-file path."""
    # custom_load=False: the file is a plain state dict (some timm releases route ViT files to the .npz loader).
    overlay = dict(VIT_MINI_IMAGE, num_classes=arch["num_classes"], first_conv="patch_embed.proj", classifier="head",
                   custom_load=False)
    if checkpoint is not None:
        overlay["file"] = checkpoint
    return timm.create_model("vit_tiny_patch16_224", pretrained=checkpoint is not None,
                             pretrained_cfg_overlay=overlay, **arch)


def card_path(checkpoint: str | Path) -> Path:
    """The card (architecture, recipe, accuracy) lies beside the checkpoint, with a .json suffix."""
    return Path(checkpoint).with_suffix(".json")


def read_card(checkpoint: str | Path = VIT_MINI_CHECKPOINT) -> dict[str, Any]:
    return json.loads(card_path(checkpoint).read_text())


def fashion_mnist_data(params: VitMiniParams, spec: ImageSpec) -> Callable[[str, int, int], PretrainEvalSet]:
    def load(split: str, size: int, seed: int) -> PretrainEvalSet:
        images, labels = load_fashion_mnist(split == "train", params.data_path, Path(params.debian_dir),
                                            params.download)
        subset = seeded_subset(labels, size, seed)
        return PretrainEvalSet(f"fashion-mnist-{split}", to_backbone_input(images[subset], spec), labels[subset],
                               CLASS_NAMES)

    return load


@register_backbone("vit-mini", VitMiniParams)
def vit_mini(params: VitMiniParams, weights: bool = True) -> Backbone:
    """ViT pre-trained on Fashion-MNIST by this project (see benchmark/assets/vit-mini.json for the recipe)."""
    try:
        arch = {k: v for k, v in read_card(params.checkpoint_path)["architecture"].items() if k != "timm_model"}
        model = create_vit_mini(params.checkpoint_path if weights else None, arch)
    except WEIGHTS_ERRORS as error:
        raise ConfigError(f"backbones.vit-mini.checkpoint: cannot load {params.checkpoint_path!r} ({one_line(error)}); "
                          "regenerate it with `python -m benchmark.pretrain`") from None
    spec = ImageSpec.from_timm(resolve_data_config(model=model))
    return Backbone("vit-mini", model.eval(), spec, fashion_mnist_data(params, spec))

